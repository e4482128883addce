// The login page: the password, then the second factor (or a first factor to enroll).

import { call, resume } from "./api.js";
import { ACCOUNT, afterPassword, endedMessage } from "./login-flow.js";
import { Alerts, busy, focus, messageFor } from "./ui.js";

const alerts = new Alerts(document.getElementById("alert"));
const step = document.getElementById("step");
const form = document.getElementById("password-form");
const username = document.getElementById("username");
const password = document.getElementById("password");
const submit = form.querySelector("button[type=submit]");

function passwordStep(message) {
  step.replaceChildren(form);
  password.value = "";
  if (message) alerts.show(message);
  focus(username.value ? password : username);
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  alerts.clear();
  let start;
  try {
    start = await busy(submit, () =>
      call("POST", "/api/login", { username: username.value, password: password.value }),
    );
  } catch (e) {
    alerts.show(messageFor(e));
    password.select();
    return;
  }
  password.value = "";
  afterPassword(step, start, { alerts, onEnded: (e) => passwordStep(endedMessage(e)) });
});

// Signed in already (the session cookie still works)? Then this page has nothing to do.
resume().then(
  () => location.replace(ACCOUNT),
  () => {},
);
