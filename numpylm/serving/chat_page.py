"""The chat page the server shows at `/`, part 3 of the guide: the smallest client of the
OpenAI-style API, one HTML file with plain JavaScript (no build step, nothing fetched from
elsewhere). It keeps the conversation in the page, posts it to `/v1/chat/completions` with
`stream: true`, and appends each server-sent event's text as it arrives; Stop aborts the
request, and the server frees that sequence at its next step."""

CHAT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>numpylm chat</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font-family: sans-serif; max-width: 46em; margin: 1em auto; padding: 0 1em; }
#log div { white-space: pre-wrap; margin: .4em 0; padding: .4em .6em; border-radius: .4em; }
.user { background: #e8eefc; } .assistant { background: #f1f1f1; } .error { color: #a00; }
form { display: flex; gap: .5em; } #text { flex: 1; }
</style></head><body>
<h1>numpylm chat</h1><p id="model"></p>
<div id="log"></div>
<form id="form"><input id="text" autocomplete="off" placeholder="Type a message">
<button id="send">Send</button><button id="stop" type="button" disabled>Stop</button>
<button id="clear" type="button">New chat</button></form>
<script>
const log = document.getElementById("log"), text = document.getElementById("text");
const send = document.getElementById("send"), stop = document.getElementById("stop");
let messages = [], controller = null, model = null;
fetch("/v1/models").then(r => r.json()).then(j => {
  model = j.data[0].id; document.getElementById("model").textContent = "model: " + model; });
function add(role, content) {
  const div = document.createElement("div"); div.className = role; div.textContent = content;
  log.appendChild(div); return div;
}
document.getElementById("clear").onclick = () => { messages = []; log.innerHTML = ""; };
stop.onclick = () => { if (controller) controller.abort(); };
document.getElementById("form").onsubmit = async (event) => {
  event.preventDefault();
  if (!text.value || controller) return;
  messages.push({role: "user", content: text.value}); add("user", text.value); text.value = "";
  const div = add("assistant", ""); let answer = "";
  controller = new AbortController(); send.disabled = true; stop.disabled = false;
  try {
    const response = await fetch("/v1/chat/completions", {method: "POST",
      headers: {"Content-Type": "application/json"}, signal: controller.signal,
      body: JSON.stringify({model: model, messages: messages, stream: true, max_tokens: 256})});
    if (!response.ok) throw new Error((await response.json()).error.message);
    const reader = response.body.getReader(), decoder = new TextDecoder();
    let buffer = "";
    while (true) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      const events = buffer.split("\\n\\n"); buffer = events.pop();
      for (const e of events) {
        const data = e.replace(/^data: /, "");
        if (data === "[DONE]") continue;
        const delta = JSON.parse(data).choices[0].delta.content;
        if (delta) { answer += delta; div.textContent = answer; }
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") { div.className = "error"; div.textContent = String(err); }
  }
  messages.push({role: "assistant", content: answer});
  controller = null; send.disabled = false; stop.disabled = true;
};
</script></body></html>
"""
