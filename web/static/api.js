// Talking to the service: JSON in and out, failures as ApiError, and the browser's session.
//
// The access token lives in this module's memory only: never in localStorage or
// sessionStorage, where any script on the origin could read it. The refresh token is an
// HttpOnly cookie that only /api/session/* receives; a page load turns it into an access token.

export class ApiError extends Error {
  constructor(status, error, message, retryAfter = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.error = error;
    this.retryAfter = retryAfter;
  }
}

let accessToken = null;

export function setAccessToken(token) {
  accessToken = token;
}

export async function call(method, path, body, { token } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "network", "The service cannot be reached. Check your connection and try again.");
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const retry = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
    throw new ApiError(
      response.status,
      data?.error ?? `http_${response.status}`,
      data?.message ?? `The service answered with status ${response.status}.`,
      Number.isFinite(retry) ? retry : null,
    );
  }
  return data;
}

// Each refresh spends the cookie's token and sets the next one. Two tabs refreshing at once
// would present the same token twice, which the service must treat as theft (it ends the whole
// login), so tabs take turns with a Web Lock: the second sends the cookie the first received.
export function withSessionLock(fn) {
  if (navigator.locks?.request) return navigator.locks.request("mfa-session", fn);
  return fn();
}

// Turn the session cookie into an access token; an ApiError (401 invalid_grant) if there is none.
export function resume() {
  return withSessionLock(async () => {
    const tokens = await call("POST", "/api/session/refresh");
    accessToken = tokens.access_token;
    return tokens;
  });
}

// A call with the access token, renewed once from the cookie when it has expired.
export async function authed(method, path, body) {
  if (!accessToken) await resume();
  try {
    return await call(method, path, body, { token: accessToken });
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 401 || e.error !== "unauthorized") throw e;
    await resume();
    return call(method, path, body, { token: accessToken });
  }
}

export async function logout() {
  try {
    await withSessionLock(() => call("POST", "/api/session/logout"));
  } finally {
    accessToken = null;
  }
}
