export const IDENTITY_KINDS = ['human', 'agent', 'service'] as const;
export type IdentityKind = (typeof IDENTITY_KINDS)[number];

/** Who is on the other end of a session, as established by a verified token or key. */
export interface Identity {
  /** Stable subject: the token's subject claim, or the key's subject. */
  subject: string;
  kind: IdentityKind;
  groups: string[];
  displayName?: string;
  email?: string;
  /** For agents acting on someone's behalf: the person's subject. */
  actingFor?: string;
  issuer?: string;
  method: 'oidc' | 'key';
  /** Key id for key logins. */
  keyId?: string;
  /** Epoch seconds when the credential stops being valid, if it expires. */
  expiresAt?: number;
}

/** A verification failure with a reason that is safe and useful to show the client. */
export class AuthError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuthError';
  }
}
