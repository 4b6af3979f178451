/** The source of "now" for every rule that depends on time, so tests can move time instead of waiting. */
export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

/** The current time as Plinth stores it: an ISO-8601 UTC string with milliseconds. */
export function timestamp(clock: Clock): string {
  return clock.now().toISOString();
}
