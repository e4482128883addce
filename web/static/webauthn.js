// Security keys: the browser's WebAuthn API with the JSON forms of WebAuthn Level 3.
//
// The service sends options as JSON (base64url for binary fields) and takes back exactly what
// PublicKeyCredential.toJSON() returns. Browsers without the Level 3 helpers get the same
// conversion done here (WebAuthn L3, sections 5.1.8-5.1.10 and 5.4/5.5 JSON types).

export class KeyError extends Error {
  constructor(message, reason) {
    super(message);
    this.name = "KeyError";
    this.reason = reason;
  }
}

export function supported() {
  return typeof window.PublicKeyCredential === "function" && !!navigator.credentials;
}

function fromB64url(value) {
  const base64 = value.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(value.length / 4) * 4, "=");
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0)).buffer;
}

function toB64url(buffer) {
  let text = "";
  for (const byte of new Uint8Array(buffer)) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function descriptors(list) {
  return (list ?? []).map((d) => ({ ...d, id: fromB64url(d.id) }));
}

function creationOptions(json) {
  if (typeof PublicKeyCredential.parseCreationOptionsFromJSON === "function") {
    return PublicKeyCredential.parseCreationOptionsFromJSON(json);
  }
  return {
    ...json,
    challenge: fromB64url(json.challenge),
    user: { ...json.user, id: fromB64url(json.user.id) },
    excludeCredentials: descriptors(json.excludeCredentials),
  };
}

function requestOptions(json) {
  if (typeof PublicKeyCredential.parseRequestOptionsFromJSON === "function") {
    return PublicKeyCredential.parseRequestOptionsFromJSON(json);
  }
  return { ...json, challenge: fromB64url(json.challenge), allowCredentials: descriptors(json.allowCredentials) };
}

function credentialJSON(credential) {
  if (typeof credential.toJSON === "function") return credential.toJSON();
  const r = credential.response;
  const response = { clientDataJSON: toB64url(r.clientDataJSON) };
  if (r.attestationObject) {
    response.attestationObject = toB64url(r.attestationObject);
    response.transports = r.getTransports?.() ?? [];
  } else {
    response.authenticatorData = toB64url(r.authenticatorData);
    response.signature = toB64url(r.signature);
    if (r.userHandle) response.userHandle = toB64url(r.userHandle);
  }
  return {
    id: credential.id,
    rawId: toB64url(credential.rawId),
    type: credential.type,
    authenticatorAttachment: credential.authenticatorAttachment ?? undefined,
    response,
    clientExtensionResults: credential.getClientExtensionResults(),
  };
}

// The browser's errors, as a sentence for the person holding the key.
function explain(e, creating) {
  switch (e?.name) {
    case "NotAllowedError":
      // The browser tells a cancelled prompt and a key without a matching credential apart
      // only in its own dialog (WebAuthn L3, "Authentication Ceremony Privacy").
      return creating
        ? new KeyError("The security key prompt was cancelled or timed out. Try again, and touch your key when it blinks.", "cancelled")
        : new KeyError("No security key answered: the prompt was cancelled or timed out, or this key is not registered to your account.", "cancelled");
    case "InvalidStateError":
      return creating
        ? new KeyError("This security key is already registered to your account.", "known")
        : new KeyError("This security key cannot be used here.", "invalid");
    case "SecurityError":
      return new KeyError("Security keys work only at the service's own address (over https, or on localhost).", "origin");
    case "NotSupportedError":
      return new KeyError("This security key or browser does not support what the service asks for.", "unsupported");
    case "AbortError":
      return new KeyError("The security key prompt was cancelled.", "cancelled");
    default:
      return new KeyError("The security key did not answer. Try again.", "failed");
  }
}

function requireSupport() {
  if (!supported()) throw new KeyError("This browser does not support security keys.", "unsupported");
}

// Register a new key: creation options JSON in, the credential's JSON out.
export async function create(publicKey) {
  requireSupport();
  try {
    const credential = await navigator.credentials.create({ publicKey: creationOptions(publicKey) });
    if (!credential) throw new DOMException("no credential", "NotAllowedError");
    return credentialJSON(credential);
  } catch (e) {
    throw explain(e, true);
  }
}

// Sign in with a key: request options JSON in, the assertion's JSON out.
export async function get(publicKey) {
  requireSupport();
  try {
    const credential = await navigator.credentials.get({ publicKey: requestOptions(publicKey) });
    if (!credential) throw new DOMException("no credential", "NotAllowedError");
    return credentialJSON(credential);
  } catch (e) {
    throw explain(e, false);
  }
}
