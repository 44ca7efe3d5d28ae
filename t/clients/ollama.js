// ollama-js against Nebula: chat, generate (streamed), embed, list, ps,
// show, version, and the errors it reads from Ollama's {"error": "..."}.
// Prints one JSON object of what it saw; t/60-clients.t judges it.
'use strict';

const { Ollama } = require('ollama');

const ollama = new Ollama({ host: process.env.NEBULA_URL,
                            headers: { Authorization: 'Bearer ' + process.env.NEBULA_KEY } });
const out = {};

async function caught(what, f) {
    try {
        out[what] = { ok: await f() };
    } catch (e) {
        out[what] = { error: e.name, status: e.status_code, message: e.message };
    }
}

(async () => {
    await caught('chat', async () => {
        const r = await ollama.chat({ model: 'qwen3:latest', options: { num_predict: 4 },
                                      messages: [{ role: 'user', content: 'Hello there' }] });
        return { model: r.model, text: r.message.content, done: r.done,
                 prompt_eval_count: r.prompt_eval_count, eval_count: r.eval_count };
    });

    await caught('generate_stream', async () => {
        const s = await ollama.generate({ model: 'qwen3:latest', prompt: 'Tell me', stream: true,
                                          options: { num_predict: 6 } });
        let text = '', last = null, models = new Set();
        for await (const p of s) { text += p.response; last = p; models.add(p.model); }
        return { text, done: last.done, eval_count: last.eval_count, models: [...models] };
    });

    await caught('embed', async () => {
        const r = await ollama.embed({ model: 'nomic-embed-text:latest', input: ['a b c', 'd'] });
        return { model: r.model, count: r.embeddings.length, prompt_eval_count: r.prompt_eval_count };
    });

    await caught('list', async () => (await ollama.list()).models.map((m) => m.name));

    await caught('version', async () => (await ollama.version()).version);

    // what chat, generate and embed left loaded, as the key sees it
    await caught('ps', async () => (await ollama.ps()).models
        .map((m) => [m.name, m.model, m.context_length]).sort());

    await caught('show', async () => {
        const r = await ollama.show({ model: 'qwen/qwen3-coder:free' });
        const ctx = Object.keys(r.model_info).filter((k) => k.endsWith('.context_length'))
            .map((k) => r.model_info[k]);
        return { context: ctx, from: (r.modelfile.match(/^# FROM (.*)$/m) || [])[1],
                 capabilities: r.capabilities };
    });

    await caught('unknown_model', () => ollama.chat({ model: 'llama9:1b',
                                                      messages: [{ role: 'user', content: 'hi' }] }));

    await caught('pull', () => ollama.pull({ model: 'qwen3:latest' }));

    await caught('delete', () => ollama.delete({ model: 'qwen3:latest' }));

    process.stdout.write(JSON.stringify(out) + '\n');
})().catch((e) => { console.error(e); process.exit(1); });
