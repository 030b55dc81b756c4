/**
 * The SaaS LiteLLM job flow with Node's built-in fetch: create a job, make LLM calls in it,
 * complete it, and read what it cost.
 *
 * A job is one unit of work for your users (analysing a document, parsing a resume...). Opening it
 * holds 1 credit; completing it with status "completed" charges that credit, exactly once, however
 * many LLM calls it made. A job completed as "failed" is not charged.
 *
 * Configuration (environment):
 *   SAASLLM_URL          base URL of the service, e.g. http://localhost:8000
 *   SAASLLM_API_KEY      the team's virtual key (sk-...)
 *   SAASLLM_TEAM_ID      the team's id, e.g. team_engineering
 *   SAASLLM_MODEL_GROUP  a model group granted to the team, e.g. ChatAgent
 *
 * Run: npm run job-flow   (or: npx tsx job_flow.ts)
 */

type Json = Record<string, unknown>;

interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

interface CallResult {
  call_id: string;
  response: { content: string; finish_reason: string | null };
  metadata: { tokens_used: number | null; latency_ms: number | null; model_group: string };
}

interface JobCosts {
  total_calls: number;
  successful_calls: number;
  failed_calls: number;
  total_tokens: number;
  total_cost_usd: number;
  avg_latency_ms: number;
  credit_applied: boolean;
  credits_remaining: number;
}

type JobStatus = "pending" | "in_progress" | "completing" | "completed" | "failed" | "expired";

interface Job {
  job_id: string;
  status: JobStatus;
  costs?: JobCosts;
}

/** An error answer from the service: every error body is {"detail": "..."}. */
class SaasLLMError extends Error {
  constructor(
    readonly status: number,
    readonly detail: string,
  ) {
    super(`HTTP ${status}: ${detail}`);
    this.name = "SaasLLMError";
  }
}

function env(name: string, fallback?: string): string {
  const value = process.env[name] ?? fallback;
  if (value === undefined || value === "") {
    throw new Error(`set ${name}`);
  }
  return value;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

class SaasLLMClient {
  constructor(
    private readonly baseUrl: string,
    private readonly apiKey: string,
    readonly teamId: string,
  ) {}

  private async request<T>(method: "GET" | "POST", path: string, body?: Json): Promise<{ status: number; data: T }> {
    const init: RequestInit = {
      method,
      headers: { Authorization: `Bearer ${this.apiKey}`, "Content-Type": "application/json" },
      // A synchronous llm-call waits for the model's answer (the server gives up after
      // SYNC_CALL_TIMEOUT_SECS, 300 s by default).
      signal: AbortSignal.timeout(330_000),
    };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
    }
    const response = await fetch(`${this.baseUrl}${path}`, init);
    const text = await response.text();
    if (!response.ok) {
      let detail = text;
      try {
        const parsed = JSON.parse(text) as { detail?: unknown };
        if (typeof parsed.detail === "string") detail = parsed.detail;
      } catch {
        // not JSON: keep the raw text
      }
      throw new SaasLLMError(response.status, detail);
    }
    return { status: response.status, data: JSON.parse(text) as T };
  }

  async createJob(jobType: string, metadata: Json, userId?: string): Promise<string> {
    const body: Json = { team_id: this.teamId, job_type: jobType, metadata };
    if (userId !== undefined) body.user_id = userId;
    const { data } = await this.request<{ job_id: string }>("POST", "/api/jobs/create", body);
    return data.job_id;
  }

  /** Runs one call and waits for its answer. The group's models are tried in priority order. */
  async llmCall(jobId: string, modelGroup: string, messages: ChatMessage[], purpose?: string): Promise<CallResult> {
    const body: Json = { model_group: modelGroup, messages };
    if (purpose !== undefined) body.purpose = purpose;
    const { data } = await this.request<CallResult>("POST", `/api/jobs/${jobId}/llm-call`, body);
    return data;
  }

  async completeJob(
    jobId: string,
    status: "completed" | "failed",
    metadata: Json = {},
    errorMessage?: string,
  ): Promise<Job> {
    const body: Json = { status, metadata };
    if (errorMessage !== undefined) body.error_message = errorMessage;
    let { status: httpStatus, data: job } = await this.request<Job>("POST", `/api/jobs/${jobId}/complete`, body);
    // 202 means calls were still running: the job settles when they finish. Poll until then.
    const deadline = Date.now() + 600_000;
    while (httpStatus === 202 || job.status === "completing") {
      if (Date.now() > deadline) throw new Error(`job ${jobId} is still completing after 10 minutes`);
      await sleep(500);
      ({ status: httpStatus, data: job } = await this.request<Job>("GET", `/api/jobs/${jobId}`));
    }
    return job;
  }
}

async function main(): Promise<void> {
  const client = new SaasLLMClient(
    env("SAASLLM_URL", "http://localhost:8000").replace(/\/+$/, ""),
    env("SAASLLM_API_KEY"),
    env("SAASLLM_TEAM_ID"),
  );
  const modelGroup = env("SAASLLM_MODEL_GROUP", "ChatAgent");

  const jobId = await client.createJob(
    "document_analysis",
    { document_id: "doc_456", source: "examples/typescript/job_flow.ts" },
    "user_123",
  );
  console.log(`Job created: ${jobId}`);

  let summary: CallResult;
  let keywords: CallResult;
  try {
    summary = await client.llmCall(
      jobId,
      modelGroup,
      [
        { role: "system", content: "You summarise documents in one sentence." },
        { role: "user", content: "Summarise: SaaS LiteLLM meters LLM usage per team with credits." },
      ],
      "summary",
    );
    keywords = await client.llmCall(
      jobId,
      modelGroup,
      [{ role: "user", content: `List three keywords for: ${summary.response.content}` }],
      "keywords",
    );
  } catch (error) {
    // Close the job as failed so its held credit is released (a failed job is not charged).
    await client.completeJob(jobId, "failed", {}, String(error));
    throw error;
  }

  const job = await client.completeJob(jobId, "completed", { result: "success" });
  if (job.costs === undefined) throw new Error(`job ${jobId} settled without costs: ${JSON.stringify(job)}`);
  const costs = job.costs;

  console.log(`Summary: ${summary.response.content}`);
  console.log(`Keywords: ${keywords.response.content}`);
  console.log(
    `Job ${job.status}: ${costs.total_calls} calls (${costs.successful_calls} succeeded, ` +
      `${costs.failed_calls} failed), ${costs.total_tokens} tokens, ` +
      `$${costs.total_cost_usd.toFixed(6)}, average latency ${costs.avg_latency_ms} ms, ` +
      `credit charged: ${costs.credit_applied ? "yes" : "no"}`,
  );
  console.log(`Credits remaining: ${costs.credits_remaining}`);
}

main().catch((error: unknown) => {
  console.error(error instanceof SaasLLMError ? `SaaS LiteLLM error: ${error.message}` : error);
  process.exit(1);
});
