export * from './apikeys.ts';
export * from './auth.ts';
export * from './auth-errors.ts';
export * from './errors.ts';
export * from './org-errors.ts';
export * from './orgs.ts';
export * from './pagination.ts';
export * from './problem.ts';
