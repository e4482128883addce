// Small DOM helpers, and the sentences people read when something goes wrong.

// h("button", { type: "button", onclick }, "Text"): an element with properties and children.
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

let nextId = 0;
export function uid(prefix) {
  nextId += 1;
  return `${prefix}-${nextId}`;
}

// A labelled input: returns { field, input }. The label is what assistive tech and tests read.
export function field(label, props = {}) {
  const id = uid("f");
  const input = h("input", { id, ...props });
  return { field: h("div", { class: "field" }, h("label", { for: id }, label), input), input };
}

// One message area per page (or dialog), role="alert": screen readers announce each message.
export class Alerts {
  constructor(node) {
    this.node = node;
  }

  show(message) {
    // Emptied first, so that the same message twice is announced twice.
    this.node.textContent = "";
    this.node.hidden = false;
    setTimeout(() => {
      this.node.textContent = message;
      this.node.scrollIntoView({ block: "nearest" });
    }, 30);
  }

  clear() {
    this.node.textContent = "";
    this.node.hidden = true;
  }
}

export function waitText(seconds) {
  if (seconds === null || seconds === undefined) return "a while";
  if (seconds < 90) return `${seconds} second${seconds === 1 ? "" : "s"}`;
  const minutes = Math.ceil(seconds / 60);
  return `${minutes} minutes`;
}

// What to tell a person about a failed call. `kind` is the factor type being answered, if any.
export function messageFor(e, kind) {
  switch (e?.error) {
    case "verification_failed":
      if (kind === "webauthn") return "This security key was not accepted: it is not registered to your account, or it failed a check.";
      if (kind === "recovery") return "That recovery code was not accepted. Each code works only once.";
      if (kind === "ocra") return "That response was not accepted. Check it and try again.";
      return "That code was not accepted. Check it and try again.";
    case "too_many_attempts":
      return `Too many failed attempts. Wait ${waitText(e.retryAfter)} before trying again.`;
    case "locked":
      return "Your second factors are locked after too many failed attempts. Ask an administrator to unlock them.";
    case "invalid_mfa_token":
      return "This login has expired or ended. Please log in again.";
    case "invalid_credentials":
      return "The username or password is wrong.";
    case "username_taken":
      return "This username is taken. Choose another one.";
    case "invalid_grant":
    case "unauthorized":
      return "Your session has ended. Please log in again.";
    case "forbidden":
      return "The service refused this request from this page. Open the service at its configured address.";
    default:
      return e?.message || "Something went wrong. Try again.";
  }
}

// Run `fn` with `button` disabled (so a double click sends one request), then enable it again.
export async function busy(button, fn) {
  const wasDisabled = button.disabled;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await fn();
  } finally {
    button.removeAttribute("aria-busy");
    button.disabled = wasDisabled;
  }
}

// Keep `button` disabled for the Retry-After of a throttled attempt.
export function holdFor(button, seconds) {
  if (!seconds) return;
  button.disabled = true;
  setTimeout(() => {
    button.disabled = false;
  }, seconds * 1000);
}

// Move focus to `node` (a heading or an input) after the page changed under the person.
export function focus(node) {
  if (!node) return;
  if (!node.matches("input, button, select, textarea, a[href]")) node.tabIndex = -1;
  node.focus();
}

export const TYPE_NAMES = {
  totp: "Authenticator app",
  hotp: "Hardware token (counter)",
  ocra: "Challenge–response token",
  webauthn: "Security key",
  recovery: "Recovery codes",
};

export function formatTime(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  return new Date(seconds * 1000).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}
