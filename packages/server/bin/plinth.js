#!/usr/bin/env node
// Plinth runs its TypeScript sources directly through tsx's loader: one artifact, no build step, and stack
// traces that point at the real files (see docs/architecture.md).
import { register } from 'tsx/esm/api';

register();
await import('../src/cli.ts');
