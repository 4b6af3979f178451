import { createPrivateKey, createPublicKey, createSecretKey, type KeyObject } from 'node:crypto';
import { authErrors } from '@plinth/shared';
import { calculateJwkThumbprint, exportJWK, type JWK, type JWTPayload, jwtVerify, SignJWT } from 'jose';
import type { AuthConfig } from '../../config.ts';
import { AppError } from '../../core/errors.ts';
import { newId } from '../../core/ids.ts';

/** What a verified access token says: who (`userId`) and through which session (`sessionId`, the `sid` claim). */
export interface AccessClaims {
  userId: string;
  sessionId: string;
  /** Expiry, seconds since the epoch. */
  expiresAt: number;
}

/**
 * Access tokens are JWTs (RFC 9068 `at+jwt`); the MFA token handed out between password and second factor is a
 * JWT of its own type and audience, so neither can stand in for the other. Refresh tokens are opaque random
 * strings (see session.service.ts), never JWTs.
 */
const ACCESS_TYPE = 'at+jwt';
const MFA_TYPE = 'mfa+jwt';
/** How long the second factor may take after the password was accepted, in seconds. */
export const MFA_TOKEN_TTL_SECONDS = 300;
/**
 * Clock difference tolerated between the issuing and the verifying replica, in seconds: an access token is
 * accepted until `exp` plus this much.
 */
export const CLOCK_SKEW_SECONDS = 5;

export interface TokenService {
  signAccessToken(
    claims: { userId: string; sessionId: string },
    now: Date,
  ): Promise<{ token: string; expiresIn: number }>;
  /** @throws AppError INVALID_TOKEN for anything but a valid, current access token of this installation. */
  verifyAccessToken(token: string, now: Date): Promise<AccessClaims>;
  signMfaToken(userId: string, now: Date): Promise<string>;
  /** @returns the user id the MFA token was issued to. */
  verifyMfaToken(token: string, now: Date): Promise<string>;
  /** The public keys for `/.well-known/jwks.json`; empty with a shared secret (HS256). */
  readonly jwks: { keys: JWK[] };
}

interface SigningKey {
  alg: 'HS256' | 'EdDSA' | 'RS256';
  signKey: KeyObject;
  verifyKey: KeyObject;
  /** Set for asymmetric keys: tokens must name this `kid`. */
  kid: string | undefined;
  publicJwk: JWK | undefined;
}

async function signingKey(config: AuthConfig, jwtSecret: string): Promise<SigningKey> {
  if (!config.jwtPrivateKey) {
    const secret = createSecretKey(Buffer.from(jwtSecret, 'utf8'));
    return { alg: 'HS256', signKey: secret, verifyKey: secret, kid: undefined, publicJwk: undefined };
  }
  const privateKey = createPrivateKey(config.jwtPrivateKey);
  const alg =
    privateKey.asymmetricKeyType === 'ed25519'
      ? 'EdDSA'
      : privateKey.asymmetricKeyType === 'rsa'
        ? 'RS256'
        : undefined;
  if (!alg)
    throw new Error(
      `JWT_PRIVATE_KEY: unsupported key type ${privateKey.asymmetricKeyType}; use Ed25519 or RSA`,
    );
  const publicKey = createPublicKey(privateKey);
  const jwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(jwk);
  return { alg, signKey: privateKey, verifyKey: publicKey, kid, publicJwk: { ...jwk, kid, alg, use: 'sig' } };
}

/** Builds the token service from configuration; the key is fixed for the life of the process. */
export async function createTokenService(config: AuthConfig, jwtSecret: string): Promise<TokenService> {
  const key = await signingKey(config, jwtSecret);
  const mfaAudience = `${config.jwtAudience}:mfa`;

  const sign = (payload: JWTPayload, type: string, audience: string, ttlSeconds: number, now: Date) => {
    const iat = Math.floor(now.getTime() / 1000);
    return new SignJWT(payload)
      .setProtectedHeader({ alg: key.alg, typ: type, ...(key.kid ? { kid: key.kid } : {}) })
      .setIssuer(config.jwtIssuer)
      .setAudience(audience)
      .setIssuedAt(iat)
      .setNotBefore(iat)
      .setExpirationTime(iat + ttlSeconds)
      .setJti(newId())
      .sign(key.signKey);
  };

  // The algorithm, type, issuer and audience are pinned; the key comes from configuration only, whatever the
  // header says (`jku`, `x5u` and an embedded `jwk` are never followed), and a `kid` other than ours is refused.
  const verify = async (token: string, type: string, audience: string, now: Date): Promise<JWTPayload> => {
    try {
      const { payload, protectedHeader } = await jwtVerify(token, key.verifyKey, {
        algorithms: [key.alg],
        typ: type,
        issuer: config.jwtIssuer,
        audience,
        clockTolerance: CLOCK_SKEW_SECONDS,
        currentDate: now,
        requiredClaims: ['sub', 'exp', 'iat', 'jti'],
      });
      if (protectedHeader.kid !== key.kid) throw new Error('unknown kid');
      if (typeof payload.sub !== 'string') throw new Error('sub must be a string');
      return payload;
    } catch (error) {
      throw new AppError(authErrors.INVALID_TOKEN, { cause: error });
    }
  };

  return {
    jwks: { keys: key.publicJwk ? [key.publicJwk] : [] },
    async signAccessToken({ userId, sessionId }, now) {
      const ttl = config.accessTokenTtlSeconds;
      return {
        token: await sign({ sub: userId, sid: sessionId }, ACCESS_TYPE, config.jwtAudience, ttl, now),
        expiresIn: ttl,
      };
    },
    async verifyAccessToken(token, now) {
      const payload = await verify(token, ACCESS_TYPE, config.jwtAudience, now);
      if (typeof payload.sid !== 'string') throw new AppError(authErrors.INVALID_TOKEN);
      return { userId: payload.sub as string, sessionId: payload.sid, expiresAt: payload.exp as number };
    },
    signMfaToken: (userId, now) => sign({ sub: userId }, MFA_TYPE, mfaAudience, MFA_TOKEN_TTL_SECONDS, now),
    async verifyMfaToken(token, now) {
      return (await verify(token, MFA_TYPE, mfaAudience, now)).sub as string;
    },
  };
}
