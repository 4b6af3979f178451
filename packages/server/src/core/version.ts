import serverPackage from '../../package.json' with { type: 'json' };

/** The running Plinth version, from the server package's manifest. */
export const VERSION: string = serverPackage.version;
