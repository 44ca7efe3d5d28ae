// LangChain.js against Nebula: @langchain/openai (chat, a stream,
// embeddings) and @langchain/ollama (chat, embeddings).  Prints one JSON
// object of what it saw; t/60-clients.t judges it.
'use strict';

const { ChatOpenAI, OpenAIEmbeddings } = require('@langchain/openai');
const { ChatOllama, OllamaEmbeddings } = require('@langchain/ollama');

const url = process.env.NEBULA_URL;
const key = process.env.NEBULA_KEY;
const out = {};

async function caught(what, f) {
    try {
        out[what] = { ok: await f() };
    } catch (e) {
        out[what] = { error: e.constructor.name, status: e.status, message: e.message };
    }
}

(async () => {
    const openai = { configuration: { baseURL: url + '/v1' }, apiKey: key, maxRetries: 0 };

    await caught('openai_chat', async () => {
        const m = new ChatOpenAI({ ...openai, model: 'qwen3:latest', maxTokens: 4 });
        const r = await m.invoke('Hello there');
        return { text: r.content, usage: r.usage_metadata,
                 model: r.response_metadata.model_name };
    });

    await caught('openai_stream', async () => {
        const m = new ChatOpenAI({ ...openai, model: 'qwen3:latest', streaming: true });
        let text = '', usage = null;
        for await (const c of await m.stream('Count with me')) {
            text += c.content;
            if (c.usage_metadata) usage = c.usage_metadata;
        }
        return { text, usage };
    });

    await caught('openai_embed', async () => {
        const e = new OpenAIEmbeddings({ ...openai, model: 'nomic-embed-text:latest' });
        const v = await e.embedDocuments(['one text', 'two texts here']);
        return { count: v.length, dims: v[0].length };
    });

    const ollama = { baseUrl: url, headers: { Authorization: 'Bearer ' + key } };

    await caught('ollama_chat', async () => {
        const m = new ChatOllama({ ...ollama, model: 'qwen3:latest', numPredict: 3 });
        const r = await m.invoke('Hello there');
        return { text: r.content, usage: r.usage_metadata };
    });

    await caught('ollama_embed', async () => {
        const e = new OllamaEmbeddings({ ...ollama, model: 'nomic-embed-text:latest' });
        const v = await e.embedQuery('a query');
        return { dims: v.length };
    });

    process.stdout.write(JSON.stringify(out) + '\n');
})().catch((e) => { console.error(e); process.exit(1); });
