// The official Anthropic SDK against Nebula's /v1/messages: a message, a
// stream, a tool-use round (the simulator's x-sim-tool-call makes the model
// call the tool; its tool_result goes back), the key sent as the SDK sends
// it by default (apiKey: since 1.0, API version 2026-10-21, as
// Authorization: Bearer; before, as x-api-key), as authToken (Bearer), and
// as an x-api-key header (as Claude Code and the 0.x SDKs send it), and the
// errors it maps to its classes.  Prints one JSON object of what it saw
// (`auth`: the credential headers each client sent); t/60-clients.t judges
// it.  NEBULA_URL, NEBULA_KEY, NODE_PATH set by it.
'use strict';

const Anthropic = require('@anthropic-ai/sdk');

const base = process.env.NEBULA_URL;
const key = process.env.NEBULA_KEY;
const out = { sdk: Anthropic.VERSION || require('@anthropic-ai/sdk/version').VERSION, auth: {} };

// a client whose requests' credential headers are noted in out.auth[name]
function sdk(name, opts) {
    return new Anthropic({
        baseURL: base, maxRetries: 0, ...opts,
        fetch: (url, init) => {
            const h = new Headers(init && init.headers);
            out.auth[name] = ['authorization', 'x-api-key'].filter((n) => h.has(n));
            return fetch(url, init);
        },
    });
}

const client = sdk('api_key', { apiKey: key });

async function caught(what, f) {
    try {
        out[what] = { ok: await f() };
    } catch (e) {
        const body = e.error || {};
        out[what] = { error: e.constructor.name, status: e.status,
                      type: body.error && body.error.type, message: e.message,
                      request_id: body.request_id };
    }
}

const weather = {
    name: 'get_weather', description: 'The weather in a city',
    input_schema: { type: 'object', properties: { query: { type: 'string' } }, required: ['query'] },
};

function text(msg) {
    return msg.content.filter((b) => b.type === 'text').map((b) => b.text).join('');
}

(async () => {
    await caught('message', async () => {
        const m = await client.messages.create({
            model: 'qwen3:latest', max_tokens: 5, system: 'Be brief.',
            messages: [{ role: 'user', content: 'Hello there' }] });
        return { id: m.id, type: m.type, role: m.role, model: m.model, text: text(m),
                 stop_reason: m.stop_reason, usage: m.usage };
    });

    await caught('stream', async () => {
        const s = client.messages.stream({
            model: 'qwen3:latest', max_tokens: 100,
            messages: [{ role: 'user', content: 'Count with me' }] });
        let streamed = '';
        const events = [];
        s.on('text', (t) => { streamed += t; });
        for await (const ev of s) events.push(ev.type);
        const m = await s.finalMessage();
        return { text: streamed, final_text: text(m), model: m.model, stop_reason: m.stop_reason,
                 usage: m.usage, events: events.length,
                 first: events[0], last: events[events.length - 1] };
    });

    await caught('tool_use', async () => {
        const question = { role: 'user', content: 'What is the weather in Paris?' };
        const first = await client.messages.create(
            { model: 'qwen3:latest', max_tokens: 200, tools: [weather], messages: [question] },
            { headers: { 'x-sim-tool-call': 'get_weather', 'x-sim-tokens': '0' } });
        const call = first.content.find((b) => b.type === 'tool_use');
        const second = await client.messages.create({
            model: 'qwen3:latest', max_tokens: 200, tools: [weather],
            messages: [question, { role: 'assistant', content: first.content },
                       { role: 'user', content: [{ type: 'tool_result', tool_use_id: call.id,
                                                   content: 'Sunny, 21 degrees' }] }] });
        return { stop_reason: first.stop_reason, name: call.name, id: call.id,
                 input_keys: Object.keys(call.input), usage: first.usage,
                 answer: { text: text(second), stop_reason: second.stop_reason,
                           usage: second.usage } };
    });

    await caught('tool_use_stream', async () => {
        const s = client.messages.stream(
            { model: 'qwen3:latest', max_tokens: 200, tools: [weather],
              messages: [{ role: 'user', content: 'Weather in Oslo?' }] },
            { headers: { 'x-sim-tool-call': 'get_weather', 'x-sim-tokens': '2' } });
        const m = await s.finalMessage();
        return { stop_reason: m.stop_reason, blocks: m.content.map((b) => b.type),
                 input_keys: Object.keys(m.content[m.content.length - 1].input || {}),
                 usage: m.usage };
    });

    await caught('bearer', async () => {
        const m = await sdk('auth_token', { apiKey: null, authToken: key }).messages.create({
            model: 'qwen3:latest', max_tokens: 3,
            messages: [{ role: 'user', content: 'Hi' }] });
        return { text: text(m), usage: m.usage };
    });

    await caught('x_api_key', async () => {
        const m = await sdk('x_api_key', { apiKey: null, defaultHeaders: { 'x-api-key': key } })
            .messages.create({ model: 'qwen3:latest', max_tokens: 2,
                               messages: [{ role: 'user', content: 'Hi' }] });
        return { text: text(m), usage: m.usage };
    });

    await caught('unknown_model', () => client.messages.create({
        model: 'claude-opus-4-1', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] }));

    await caught('bad_request', () => client.messages.create({
        model: 'qwen3:latest', max_tokens: 0, messages: [{ role: 'user', content: 'hi' }] }));

    process.stdout.write(JSON.stringify(out) + '\n');
})().catch((e) => { console.error(e); process.exit(1); });
