/**
 * The official `openai` npm package against SaaS LiteLLM's OpenAI-compatible endpoint: the team's
 * virtual key is the API key and SAASLLM_URL/v1 the base URL; nothing else changes in your code.
 *
 * On this path each request is billed in dollars against the team's budget (credits_allocated x
 * USD_PER_CREDIT, $0.10 per credit by default) rather than by the job: the balance shows it as
 * spend_usd / budget_usd, and credits_remaining stays as it is. The models the team may use are
 * those of its model groups (`client.models.list()`); any other model gets 403.
 *
 * Configuration (environment):
 *   SAASLLM_URL      base URL of the service, e.g. http://localhost:8000
 *   SAASLLM_API_KEY  the team's virtual key (sk-...)
 *   SAASLLM_TEAM_ID  the team's id, used to read its balance
 *   SAASLLM_MODEL    optional: the model to call (default: the first one the team may use)
 *
 * Run: npm run openai-sdk   (or: npx tsx openai_sdk.ts)
 */

import OpenAI from "openai";

interface Balance {
  team_id: string;
  credits_allocated: number;
  credits_remaining: number;
  credits_available: number;
  budget_usd: number;
  spend_usd: number;
}

function env(name: string, fallback?: string): string {
  const value = process.env[name] ?? fallback;
  if (value === undefined || value === "") {
    throw new Error(`set ${name}`);
  }
  return value;
}

const baseUrl = env("SAASLLM_URL", "http://localhost:8000").replace(/\/+$/, "");
const apiKey = env("SAASLLM_API_KEY");
const teamId = env("SAASLLM_TEAM_ID");

async function main(): Promise<void> {
  const client = new OpenAI({ apiKey, baseURL: `${baseUrl}/v1` });

  const allowed: string[] = [];
  for await (const model of client.models.list()) {
    allowed.push(model.id);
  }
  const model = process.env.SAASLLM_MODEL || allowed[0];
  if (model === undefined) throw new Error("this key may use no model: grant the team a model group");
  console.log(`Models this key may use: ${allowed.join(", ")}; using ${model}`);

  const completion = await client.chat.completions.create({
    model,
    messages: [
      { role: "system", content: "You are a helpful assistant." },
      { role: "user", content: "Hello!" },
    ],
  });
  console.log(`Completion: ${completion.choices[0]?.message.content ?? ""}`);
  if (completion.usage) {
    console.log(`Tokens: ${completion.usage.prompt_tokens} in, ${completion.usage.completion_tokens} out`);
  }

  const stream = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: "Tell me a story" }],
    stream: true,
  });
  process.stdout.write("Streamed: ");
  for await (const chunk of stream) {
    // The last chunk carries only usage, with no choices: hence the `?.`.
    process.stdout.write(chunk.choices[0]?.delta.content ?? "");
  }
  process.stdout.write("\n");

  // The balance is a SaaS LiteLLM endpoint, not part of the OpenAI API: plain fetch, same key.
  const response = await fetch(`${baseUrl}/api/credits/teams/${teamId}/balance`, {
    headers: { Authorization: `Bearer ${apiKey}` },
    signal: AbortSignal.timeout(30_000),
  });
  if (!response.ok) throw new Error(`balance: HTTP ${response.status}: ${await response.text()}`);
  const balance = (await response.json()) as Balance;
  console.log(`Spend: $${balance.spend_usd.toFixed(6)} of a $${balance.budget_usd.toFixed(2)} budget`);
  console.log(`Credits remaining: ${balance.credits_remaining}`);
}

main().catch((error: unknown) => {
  // Errors on /v1 use OpenAI's shape; 402 "Budget exceeded" means the team needs credits.
  console.error(error instanceof OpenAI.APIError ? `SaaS LiteLLM error: ${error.message}` : error);
  process.exit(1);
});
