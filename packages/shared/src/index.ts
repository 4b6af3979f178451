export * from './errors.ts';
export * from './pagination.ts';
export * from './problem.ts';
