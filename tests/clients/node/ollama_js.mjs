// Drives ollama-js (npm `ollama`) the way its users do, against the proxy at $PROXY_URL.
// Usage: node ollama_js.mjs <scenario> '<JSON params>'. Prints one JSON object on stdout:
// the scenario's result, or {"threw": {name, message, status_code}} when ollama-js threw.
import { Ollama } from 'ollama'

const ollama = new Ollama({ host: process.env.PROXY_URL })
const [scenario, rawParams] = process.argv.slice(2)
const params = JSON.parse(rawParams || '{}')
const model = params.model || 'llama3.2'

async function collect(iterator) {
  const parts = []
  for await (const part of iterator) parts.push(part)
  return parts
}

// The tool the model may call, run locally as an application would.
const TOOLS = {
  add: ({ a, b }) => String(Number(a) + Number(b)),
}
const ADD_TOOL = {
  type: 'function',
  function: {
    name: 'add',
    description: 'Adds two numbers',
    parameters: { type: 'object', properties: { a: { type: 'number' }, b: { type: 'number' } }, required: ['a', 'b'] },
  },
}

// The round trip from ollama-js's tools example: ask, run the calls, send the results back, ask again.
async function toolRoundTrip(stream) {
  const messages = [{ role: 'user', content: 'What is 2 + 3?' }]
  const ask = async () => {
    if (!stream) return (await ollama.chat({ model, messages, tools: [ADD_TOOL] })).message
    const parts = await collect(await ollama.chat({ model, messages, tools: [ADD_TOOL], stream: true }))
    const message = { role: 'assistant', content: '', tool_calls: [] }
    for (const part of parts) {
      message.content += part.message.content || ''
      message.tool_calls.push(...(part.message.tool_calls || []))
    }
    return message
  }
  const first = await ask()
  messages.push(first)
  const results = []
  for (const call of first.tool_calls || []) {
    const output = TOOLS[call.function.name](call.function.arguments)
    results.push({ name: call.function.name, arguments: call.function.arguments, output })
    messages.push({ role: 'tool', content: output, tool_name: call.function.name })
  }
  const final = await ask()
  return { first, results, final }
}

const scenarios = {
  version: () => ollama.version(),
  chat: () => ollama.chat({ model, messages: [{ role: 'user', content: params.prompt }] }),
  chat_stream: async () => ({
    parts: await collect(await ollama.chat({ model, messages: [{ role: 'user', content: params.prompt }], stream: true })),
  }),
  generate: () => ollama.generate({ model, prompt: params.prompt, system: params.system }),
  generate_stream: async () => ({
    parts: await collect(await ollama.generate({ model, prompt: params.prompt, stream: true })),
  }),
  embed: () => ollama.embed({ model, input: params.input }),
  embeddings: () => ollama.embeddings({ model, prompt: params.prompt }),
  list: () => ollama.list(),
  show: () => ollama.show({ model }),
  ps: () => ollama.ps(),
  // What applications add to a chat: an image, a JSON schema, options, keep_alive.
  chat_everything: () => ollama.chat({
    model,
    messages: [{ role: 'user', content: params.prompt, images: params.images }],
    format: params.format,
    options: { temperature: 0.3, num_ctx: 8192, num_predict: 100, stop: ['\n\n'] },
    keep_alive: '10m',
  }),
  pull: async () => ({ parts: await collect(await ollama.pull({ model, stream: true })), whole: await ollama.pull({ model }) }),
  delete: () => ollama.delete({ model }),
  chat_think: () => ollama.chat({ model, messages: [{ role: 'user', content: params.prompt }], think: params.think }),
  // Read the first part of a stream, then abort it as an application's stop button does.
  abort: async () => {
    const stream = await ollama.chat({ model, messages: [{ role: 'user', content: params.prompt }], stream: true })
    const parts = []
    try {
      for await (const part of stream) {
        parts.push(part)
        stream.abort()
      }
    } catch (error) {
      return { parts, threw: describe(error) }
    }
    return { parts }
  },
  tools: () => toolRoundTrip(false),
  tools_stream: () => toolRoundTrip(true),
  // A stream read part by part; what arrived before ollama-js threw is reported too.
  stream_until_error: async () => {
    const parts = []
    try {
      for await (const part of await ollama.chat({ model, messages: [{ role: 'user', content: params.prompt }], stream: true })) {
        parts.push(part)
      }
    } catch (error) {
      return { parts, threw: describe(error) }
    }
    return { parts }
  },
}

function describe(error) {
  return { name: error?.name, message: String(error?.message ?? error), status_code: error?.status_code ?? null }
}

try {
  const result = await scenarios[scenario]()
  process.stdout.write(JSON.stringify(result))
} catch (error) {
  process.stdout.write(JSON.stringify({ threw: describe(error) }))
}
