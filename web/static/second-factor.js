// The second factor of a login or a step-up: one way at a time, the person's other ways one
// click away. Resolves with the tokens of /api/login/verify; rejects with the ApiError when the
// login transaction has ended (expired, spent, or 5 wrong answers), so the caller starts over.

import { ApiError, call } from "./api.js";
import { busy, field, focus, h, holdFor, messageFor, uid } from "./ui.js";
import * as webauthn from "./webauthn.js";

const WAYS = [
  { way: "code", types: ["totp", "hotp"], offer: "Use a code from an app or token" },
  { way: "key", types: ["webauthn"], offer: "Use security key" },
  { way: "ocra", types: ["ocra"], offer: "Answer a challenge question" },
  { way: "recovery", types: ["recovery"], offer: "Use a recovery code" },
];

function choice(label, factors) {
  const id = uid("f");
  const select = h(
    "select",
    { id },
    factors.map((f) => h("option", { value: f.id }, f.label)),
  );
  return { field: h("div", { class: "field" }, h("label", { for: id }, label), select), select };
}

// opts: { mfaToken, factors, alerts, cookie, verifyWrap }; verifyWrap(fn) runs the verify call
// (the account page runs it under the session lock, as it replaces the session cookie).
export function secondFactor(container, opts) {
  const { mfaToken, factors, alerts, cookie = true, verifyWrap = (fn) => fn() } = opts;
  return new Promise((resolve, reject) => {
    const ways = WAYS.filter((w) => factors.some((f) => w.types.includes(f.type)));
    if (ways.length === 0) {
      reject(new ApiError(0, "no_factor", "There is no second factor to answer with."));
      return;
    }
    const of = (way) => factors.filter((f) => way.types.includes(f.type));
    const panel = h("div", { class: "way" });
    const others = h("div", { class: "others" });
    container.replaceChildren(panel, others);

    const ended = (e) => e instanceof ApiError && e.error === "invalid_mfa_token";

    // One attempt: `fn` returns the tokens, or throws; a failure is told and the step stays.
    const attempt = async (button, kind, fn) => {
      alerts.clear();
      try {
        resolve(await busy(button, fn));
        return true;
      } catch (e) {
        if (ended(e)) {
          reject(e);
          return false;
        }
        alerts.show(e instanceof webauthn.KeyError ? e.message : messageFor(e, kind));
        if (e instanceof ApiError && e.error === "too_many_attempts") holdFor(button, e.retryAfter);
        return false;
      }
    };
    const verify = (body) =>
      verifyWrap(() => call("POST", "/api/login/verify", { mfa_token: mfaToken, cookie, ...body }));

    const render = {
      code(way) {
        const list = of(way);
        const pick = list.length > 1 ? choice("App or token", list) : null;
        const code = field("Code", {
          name: "code",
          inputmode: "numeric",
          autocomplete: "one-time-code",
          required: true,
          maxlength: "12",
          spellcheck: "false",
        });
        const button = h("button", { type: "submit" }, "Verify");
        const form = h(
          "form",
          {
            onsubmit: async (event) => {
              event.preventDefault();
              const factor = pick ? list.find((f) => f.id === pick.select.value) : list[0];
              const value = code.input.value.replace(/\s+/g, "");
              const ok = await attempt(button, factor.type, () =>
                verify({ factor_id: factor.id, code: value }),
              );
              if (!ok) code.input.select();
            },
          },
          h(
            "p",
            {},
            list.length === 1
              ? `Enter the code from “${list[0].label}”.`
              : "Enter the code from your authenticator app or hardware token.",
          ),
          pick?.field,
          code.field,
          button,
        );
        return { nodes: [form], first: code.input };
      },

      key(way) {
        const keys = of(way);
        const button = h("button", { type: "button" }, "Use security key");
        button.addEventListener("click", () =>
          attempt(button, "webauthn", async () => {
            // Any key's factor opens the challenge: its options list every key of the user.
            const challenge = await call("POST", "/api/login/challenge", {
              mfa_token: mfaToken,
              factor_id: keys[0].id,
            });
            const credential = await webauthn.get(challenge.publicKey);
            return verify({ credential });
          }),
        );
        return {
          nodes: [h("p", {}, "Insert your security key, choose “Use security key”, and touch the key when it blinks."), button],
          first: button,
        };
      },

      ocra(way) {
        const list = of(way);
        const pick = list.length > 1 ? choice("Token", list) : null;
        const question = h("strong", { class: "question" }, "…");
        const response = field("Response", {
          name: "response",
          inputmode: "numeric",
          autocomplete: "off",
          required: true,
          maxlength: "64",
          spellcheck: "false",
        });
        const button = h("button", { type: "submit" }, "Verify");
        const selected = () => (pick ? list.find((f) => f.id === pick.select.value) : list[0]);
        // Each challenge asks a new question; the previous one can no longer be answered.
        const ask = async () => {
          question.textContent = "…";
          try {
            const challenge = await call("POST", "/api/login/challenge", {
              mfa_token: mfaToken,
              factor_id: selected().id,
            });
            question.textContent = challenge.question;
          } catch (e) {
            if (ended(e)) reject(e);
            else alerts.show(messageFor(e, "ocra"));
          }
        };
        pick?.select.addEventListener("change", ask);
        const again = h("button", { type: "button", class: "secondary", onclick: ask }, "New question");
        const form = h(
          "form",
          {
            onsubmit: async (event) => {
              event.preventDefault();
              const ok = await attempt(button, "ocra", () =>
                verify({ factor_id: selected().id, code: response.input.value.replace(/\s+/g, "") }),
              );
              if (!ok) response.input.select();
            },
          },
          pick?.field,
          h("p", { "aria-live": "polite" }, "Type this question into your token: ", question),
          response.field,
          h("div", { class: "actions" }, button, again),
        );
        ask();
        return { nodes: [form], first: response.input };
      },

      recovery(way) {
        const factor = of(way)[0];
        const code = field("Recovery code", {
          name: "recovery",
          autocomplete: "off",
          autocapitalize: "none",
          required: true,
          maxlength: "64",
          spellcheck: "false",
        });
        const button = h("button", { type: "submit" }, "Verify");
        const left = typeof factor.remaining === "number" ? ` You have ${factor.remaining} left.` : "";
        const form = h(
          "form",
          {
            onsubmit: async (event) => {
              event.preventDefault();
              const ok = await attempt(button, "recovery", () =>
                verify({ factor_id: factor.id, code: code.input.value.trim() }),
              );
              if (!ok) code.input.select();
            },
          },
          h("p", {}, `Enter one of your recovery codes. Each code works once.${left}`),
          code.field,
          button,
        );
        return { nodes: [form], first: code.input };
      },
    };

    const show = (way, { start = false } = {}) => {
      alerts.clear();
      const { nodes, first } = render[way.way](way);
      panel.replaceChildren(...nodes);
      const rest = ways.filter((w) => w !== way);
      others.replaceChildren(
        ...(rest.length
          ? [
              h("p", { class: "others-title" }, "Other ways to confirm it’s you:"),
              h(
                "ul",
                { class: "plain" },
                rest.map((w) =>
                  h("li", {}, h("button", { type: "button", class: "link", onclick: () => show(w, { start: w.way === "key" }) }, w.offer)),
                ),
              ),
            ]
          : []),
      );
      focus(first);
      if (start) first.click();
    };

    // The person's first factor (in the order they enrolled them) leads; recovery codes never do.
    const first = factors.find((f) => f.type !== "recovery") ?? factors[0];
    show(ways.find((w) => w.types.includes(first.type)) ?? ways[0]);
  });
}
