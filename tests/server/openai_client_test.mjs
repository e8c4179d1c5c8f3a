// Drives `rwkv serve` with the official OpenAI JavaScript client: chat and completions,
// streaming and not, stop strings, seeds, errors. Usage: node openai_client_test.mjs BASE_URL KEY
// (tests/golden/server_test.cpp starts the server and runs this). Exits non-zero on a failure.
import assert from "node:assert/strict";
import OpenAI from "openai";

const [baseURL, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey, maxRetries: 0 });
const model = (await client.models.list()).data[0].id;

// Runs a streaming request; returns the concatenated text, the finish reason and the usage.
async function streamed(create, params) {
  const stream = await create({ ...params, stream: true, stream_options: { include_usage: true } });
  let text = "", finish = null, usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      text += choice.delta ? (choice.delta.content ?? "") : choice.text;
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  return { text, finish, usage };
}
const chatStream = (p) => streamed((q) => client.chat.completions.create(q), p);
const completionStream = (p) => streamed((q) => client.completions.create(q), p);

// Chat: streamed text equals the whole reply for the same seed; usage agrees.
const chatParams = { model, messages: [{ role: "user", content: "Tell me a story." }],
                     max_tokens: 24, seed: 11, temperature: 1 };
const chat = await client.chat.completions.create(chatParams);
assert.equal(chat.object, "chat.completion");
assert.equal(chat.choices[0].message.role, "assistant");
assert.equal(chat.usage.prompt_tokens, "User: Tell me a story.\n\nAssistant:".length);
assert.equal(chat.usage.total_tokens, chat.usage.prompt_tokens + chat.usage.completion_tokens);
const chatStreamed = await chatStream(chatParams);
assert.equal(chatStreamed.text, chat.choices[0].message.content);
assert.equal(chatStreamed.finish, chat.choices[0].finish_reason);
assert.equal(chatStreamed.usage.completion_tokens, chat.usage.completion_tokens);

// Completions: seeds reproduce, another seed differs, streaming matches.
const params = { model, prompt: "Once upon a time", max_tokens: 30, temperature: 1, seed: 3 };
const a = await client.completions.create(params);
const b = await client.completions.create(params);
const c = await client.completions.create({ ...params, seed: 4 });
assert.equal(a.object, "text_completion");
assert.equal(a.choices[0].text, b.choices[0].text);
assert.notEqual(a.choices[0].text, c.choices[0].text);
assert.equal(a.usage.prompt_tokens, 16);
assert.equal(a.usage.completion_tokens, 30);
assert.equal(a.choices[0].finish_reason, "length");
const s = await completionStream(params);
assert.equal(s.text, a.choices[0].text);
assert.equal(s.finish, "length");
assert.equal(s.usage.completion_tokens, 30);

// Stop strings: greedy output of this model repeats "the"; the text ends before it.
const greedy = { model, prompt: "The ", max_tokens: 40, temperature: 0 };
const full = (await client.completions.create(greedy)).choices[0].text;
const at = full.indexOf("the");
assert.ok(at >= 0, `no "the" in ${JSON.stringify(full)}`);
const stopped = await client.completions.create({ ...greedy, stop: ["the"] });
assert.equal(stopped.choices[0].text, full.slice(0, at));
assert.equal(stopped.choices[0].finish_reason, "stop");
const stoppedStream = await completionStream({ ...greedy, stop: "the" });
assert.equal(stoppedStream.text, full.slice(0, at));

// Errors come back as the client's typed errors.
await assert.rejects(client.chat.completions.create({ ...chatParams, temperature: 5 }),
                     (e) => e.status === 400 && e.param === "temperature");
await assert.rejects(new OpenAI({ baseURL: `${baseURL}/v1`, apiKey: "wrong", maxRetries: 0 }).models.list(),
                     (e) => e.status === 401);
console.log("openai client: all checks passed");
