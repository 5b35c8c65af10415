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
  /**
   * Every other principal along the delegation chain (a token's nested `act` claims and `on_behalf_of`, a key's
   * `acting_for`), actingFor included; approvals refuse a reviewer who shares any of them with the requester.
   */
  delegation?: string[];
  issuer?: string;
  method: 'oidc' | 'key' | 'aws';
  /** Key id for key logins. */
  keyId?: string;
  /** Epoch seconds when the credential stops being valid, if it expires. */
  expiresAt?: number;
}

/** A verification failure with a reason that is safe and useful to show the client. */
export class AuthError extends Error {
  /** transient: the credential could not be checked (the issuer's keys are out of reach), not found wrong. */
  constructor(
    message: string,
    readonly transient = false,
  ) {
    super(message);
    this.name = 'AuthError';
  }
}

/** The subject and every principal it acts for or through: who an identity "is" when approvals compare people. */
export function principals(id: Pick<Identity, 'subject' | 'actingFor' | 'delegation'>): string[] {
  return [...new Set([id.subject, ...(id.actingFor !== undefined ? [id.actingFor] : []), ...(id.delegation ?? [])])];
}

/** Agents, and any identity that acts on someone else's behalf. */
export const isDelegated = (id: Pick<Identity, 'kind' | 'actingFor' | 'delegation'>): boolean => id.kind === 'agent' || id.actingFor !== undefined || (id.delegation?.length ?? 0) > 0;
