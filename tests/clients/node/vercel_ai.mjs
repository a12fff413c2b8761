// Drives the Vercel AI SDK (npm `ai`) with its Ollama provider (npm `ollama-ai-provider-v2`) the way
// their users do, against the proxy at $PROXY_URL.
// Usage: node vercel_ai.mjs <scenario> '<JSON params>'. Prints one JSON object on stdout: the
// scenario's result, or {"threw": {name, message}} when the SDK threw.
// params.kind picks the model: "chat" → ollama(model) (/api/chat), "completion" → ollama.completion(model)
// (/api/generate).
import { embed, embedMany, generateObject, generateText, stepCountIs, streamText, tool } from 'ai'
import { createOllama } from 'ollama-ai-provider-v2'
import { z } from 'zod'

globalThis.AI_SDK_LOG_WARNINGS = false // the SDK prints warnings on stdout; the scenarios return them instead
const ollama = createOllama({ baseURL: `${process.env.PROXY_URL}/api` })
const [scenario, rawParams] = process.argv.slice(2)
const params = JSON.parse(rawParams || '{}')
const modelName = params.model || 'llama3.2'
const model = () => (params.kind === 'completion' ? ollama.completion(modelName) : ollama(modelName))

// The tool the model may call, run locally by the SDK between the steps.
const tools = {
  add: tool({
    description: 'Adds two numbers',
    inputSchema: z.object({ a: z.number(), b: z.number() }),
    execute: async ({ a, b }) => String(a + b),
  }),
}

const usageOf = (usage) => ({ inputTokens: usage?.inputTokens ?? null, outputTokens: usage?.outputTokens ?? null })
const stepsOf = (steps) => steps.map((step) => ({
  text: step.text,
  finishReason: step.finishReason,
  toolCalls: step.toolCalls.map((c) => ({ toolCallId: c.toolCallId, toolName: c.toolName, input: c.input })),
  toolResults: step.toolResults.map((r) => ({ toolCallId: r.toolCallId, toolName: r.toolName, input: r.input, output: r.output })),
}))

const scenarios = {
  generate_text: async () => {
    const result = await generateText({ model: model(), prompt: params.prompt, system: params.system })
    return { text: result.text, finishReason: result.finishReason, usage: usageOf(result.usage), warnings: result.warnings ?? [] }
  },
  // The text as the application reads it (textStream), and every error the stream carried.
  stream_text: async () => {
    const errors = []
    const result = streamText({ model: model(), prompt: params.prompt, onError: ({ error }) => errors.push(describe(error)) })
    const deltas = []
    for await (const delta of result.textStream) deltas.push(delta)
    return { deltas, text: await result.text, finishReason: await result.finishReason, usage: usageOf(await result.usage), errors }
  },
  // A tool round trip: the model asks for `add`, the SDK runs it and sends the result back, the model answers.
  tools: async () => {
    const settings = { model: model(), prompt: 'What is 2 + 3?', tools, stopWhen: stepCountIs(3) }
    if (!params.stream) {
      const result = await generateText(settings)
      return { text: result.text, steps: stepsOf(result.steps) }
    }
    const errors = []
    const result = streamText({ ...settings, onError: ({ error }) => errors.push(describe(error)) })
    const deltas = []
    for await (const delta of result.textStream) deltas.push(delta)
    return { text: await result.text, deltas, steps: stepsOf(await result.steps), errors }
  },
  // Structured output: the SDK sends the zod schema's JSON schema and validates the answer against it.
  generate_object: async () => {
    const schema = z.object({ colour: z.string(), count: z.number().int() })
    const result = await generateObject({ model: model(), schema, prompt: params.prompt })
    return { object: result.object, finishReason: result.finishReason, warnings: result.warnings ?? [] }
  },
  embed: async () => {
    const result = await embed({ model: ollama.embedding(modelName), value: params.value })
    return { embedding: result.embedding, value: result.value }
  },
  embed_many: async () => {
    const result = await embedMany({ model: ollama.embedding(modelName), values: params.values })
    return { embeddings: result.embeddings, values: result.values }
  },
}

function describe(error) {
  return {
    name: error?.name,
    message: String(error?.message ?? error),
    statusCode: error?.statusCode ?? null,
    cause: error?.cause ? String(error.cause?.message ?? error.cause) : null,
  }
}

try {
  const result = await scenarios[scenario]()
  process.stdout.write(JSON.stringify(result))
} catch (error) {
  process.stdout.write(JSON.stringify({ threw: describe(error) }))
}
