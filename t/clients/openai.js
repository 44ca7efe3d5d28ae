// The official OpenAI SDK against Nebula: chat, a stream, completions,
// the Responses API (JSON and streamed), embeddings (the SDK asks for
// base64 and decodes it), models, and the errors it maps to its classes.
// Prints one JSON object of what it saw; t/60-clients.t judges it.
// NEBULA_URL, NEBULA_KEY, NODE_PATH set by it.
'use strict';

const OpenAI = require('openai');

const base = process.env.NEBULA_URL + '/v1';
const client = new OpenAI({ baseURL: base, apiKey: process.env.NEBULA_KEY, maxRetries: 0 });
const out = {};

async function caught(what, f) {
    try {
        out[what] = { ok: await f() };
    } catch (e) {
        out[what] = { error: e.constructor.name, status: e.status, code: e.code,
                      type: e.type, param: e.param, message: e.message };
    }
}

(async () => {
    await caught('chat', async () => {
        const r = await client.chat.completions.create({
            model: 'qwen3:latest', max_tokens: 5,
            messages: [{ role: 'developer', content: 'Be brief.' },
                       { role: 'user', content: 'Hello there' }] });
        return { model: r.model, text: r.choices[0].message.content,
                 finish: r.choices[0].finish_reason, usage: r.usage };
    });

    await caught('stream', async () => {
        const s = await client.chat.completions.create({
            model: 'qwen3:latest', stream: true, stream_options: { include_usage: true },
            messages: [{ role: 'user', content: 'Count with me' }] });
        let text = '', usage = null, models = new Set(), chunks = 0;
        for await (const c of s) {
            chunks++;
            models.add(c.model);
            if (c.choices.length && c.choices[0].delta.content) text += c.choices[0].delta.content;
            if (c.usage) usage = c.usage;
        }
        return { text, usage, models: [...models], chunks };
    });

    await caught('completion', async () => {
        const r = await client.completions.create({ model: 'qwen3:latest', prompt: 'Once upon a time',
                                                    max_tokens: 4 });
        return { model: r.model, text: r.choices[0].text, usage: r.usage };
    });

    await caught('completion_stream', async () => {
        const s = await client.completions.create({ model: 'qwen3:latest', prompt: 'Go on', stream: true,
                                                    max_tokens: 3 });
        let text = '';
        for await (const c of s) if (c.choices.length) text += c.choices[0].text;
        return { text };
    });

    await caught('responses', async () => {
        const r = await client.responses.create({
            model: 'qwen3:latest', instructions: 'Be brief.', input: 'Hello there',
            max_output_tokens: 6 });
        return { id: r.id, object: r.object, model: r.model, status: r.status,
                 text: r.output_text, output: r.output.map((o) => o.type), usage: r.usage };
    });

    await caught('responses_stream', async () => {
        const s = await client.responses.create({
            model: 'qwen3:latest', stream: true,
            input: [{ role: 'user', content: [{ type: 'input_text', text: 'Count with me' }] }] });
        let text = '', usage = null, status = null, events = 0, first = null, last = null, seq = -1,
            ordered = true;
        for await (const ev of s) {
            events++;
            first = first || ev.type;
            last = ev.type;
            if (ev.sequence_number !== seq + 1) ordered = false;
            seq = ev.sequence_number;
            if (ev.type === 'response.output_text.delta') text += ev.delta;
            if (ev.type === 'response.completed') {
                usage = ev.response.usage;
                status = ev.response.status;
            }
        }
        return { text, usage, status, events, first, last, ordered };
    });

    await caught('embedding', async () => {
        const r = await client.embeddings.create({ model: 'nomic-embed-text:latest',
                                                   input: ['hello world', 'good night'] });
        return { model: r.model, count: r.data.length, dims: r.data[0].embedding.length,
                 first: r.data[0].embedding[0], usage: r.usage };
    });

    await caught('model', async () => {
        const m = await client.models.retrieve('qwen/qwen3-coder:free');
        return { id: m.id, object: m.object };
    });

    await caught('models', async () => {
        const ids = [];
        for await (const m of client.models.list()) ids.push(m.id);
        return ids;
    });

    await caught('unknown_model', () => client.chat.completions.create({
        model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }));

    await caught('bad_key', () => new OpenAI({ baseURL: base, apiKey: 'nb-' + 'x'.repeat(43),
                                               maxRetries: 0 })
        .chat.completions.create({ model: 'qwen3:latest', messages: [{ role: 'user', content: 'hi' }] }));

    await caught('not_allowed', () => client.chat.completions.create({
        model: 'qwen3-vl:235b-cloud', messages: [{ role: 'user', content: 'hi' }] }));

    await caught('bad_temperature', () => client.chat.completions.create({
        model: 'qwen3:latest', temperature: 5, messages: [{ role: 'user', content: 'hi' }] }));

    process.stdout.write(JSON.stringify(out) + '\n');
})().catch((e) => { console.error(e); process.exit(1); });
