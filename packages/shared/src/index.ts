export * from './auth.ts';
export * from './auth-errors.ts';
export * from './errors.ts';
export * from './pagination.ts';
export * from './problem.ts';
