#!/usr/bin/env node
// `npm run bench`, run through tsx like the server itself.
import { register } from 'tsx/esm/api';

register();
await import('../bench/run.ts');
