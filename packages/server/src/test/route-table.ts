import type { PlinthApp } from '../app.ts';

/** A registered route: its method and its path as Fastify writes it (`/orgs/:orgId`). */
export interface RegisteredRoute {
  method: string;
  path: string;
}

/**
 * Every registered route, read from Fastify's own route table (`printRoutes`), so that a test walking "every
 * route" also reaches routes added after it was written, documented or not.
 */
export function registeredRoutes(app: PlinthApp): RegisteredRoute[] {
  const routes: RegisteredRoute[] = [];
  const prefixes: string[] = [];
  // printRoutes draws a tree, four characters per level: "│   ├── /:userId (PATCH, DELETE)".
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    const match = /^((?:│ {3}| {4})*)[├└]── (.*?)(?: \(([A-Z, ]+)\))?$/.exec(line);
    if (!match) continue;
    const depth = (match[1] ?? '').length / 4;
    const path = (prefixes[depth - 1] ?? '') + (match[2] ?? '');
    prefixes.length = depth;
    prefixes[depth] = path;
    for (const method of match[3]?.split(', ') ?? []) routes.push({ method, path });
  }
  return routes;
}
