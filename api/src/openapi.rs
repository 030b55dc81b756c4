//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` annotations (the
//! router is built from the same annotations, so a route cannot be missing from the document),
//! and the interactive docs at `/docs`, served from the binary.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/openapi.json";
/// Where the interactive docs are served.
pub const DOCS_PATH: &str = "/docs";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "SaaS LiteLLM",
        description = "Multi-tenant, credit-metered LLM platform in front of a LiteLLM proxy. \
            Organizations own teams; a team holds credits, a virtual key and grants to model groups. \
            Clients open a job, make LLM calls in it and complete it; one credit is charged per \
            successfully completed job. Teams can also use their key as an OpenAI-compatible endpoint \
            under `/v1`.\n\nEvery error is `{\"detail\": \"...\"}` (the `/v1` endpoints answer in \
            OpenAI's error shape). Admin endpoints take the admin key in `X-Admin-Key` or as a bearer \
            token; team endpoints take the team's virtual key as a bearer token (the admin key works \
            there too). Mutating job and credit endpoints accept an `Idempotency-Key` header.\n\n\
            No string may contain a NUL character (`\\u0000`, `%00`): PostgreSQL cannot store it, \
            so it is refused with a 400 naming the field, in bodies, paths and queries alike."
    ),
    modifiers(&SecuritySchemes),
    components(schemas(ErrorBody)),
    tags(
        (name = "health", description = "Liveness, dependencies and metrics"),
        (name = "organizations", description = "Organizations (admin)"),
        (name = "model-groups", description = "Named, priority-ordered model lists with fallback"),
        (name = "teams", description = "Teams, their keys and model-group grants"),
        (name = "credits", description = "Balances and the credit ledger"),
        (name = "jobs", description = "Jobs and their LLM calls: the metered data plane"),
        (name = "usage", description = "Usage reports"),
        (name = "openai", description = "OpenAI-compatible endpoint for a team's virtual key"),
        (name = "admin", description = "Admin keys with roles, and the audit log of admin changes"),
    )
)]
pub struct ApiDoc;

/// The body of every error response.
#[derive(ToSchema)]
#[allow(dead_code)] // only its schema is used; errors are rendered by `ApiError`
pub struct ErrorBody {
    /// What went wrong, for a human.
    detail: String,
}

/// The body of `POST /v1/chat/completions` as far as this service reads it: any other OpenAI
/// chat parameter is passed to the upstream unchanged.
#[derive(ToSchema)]
#[allow(dead_code)] // only its schema is used; the handler reads the body as JSON
pub struct ChatCompletionRequest {
    /// A model of one of the team's model groups.
    model: String,
    /// The conversation, passed through.
    #[schema(value_type = Vec<Object>)]
    messages: Vec<serde_json::Value>,
    /// `true` answers with server-sent events.
    stream: Option<bool>,
    /// Output token limit, also used to reserve the request's worst-case cost.
    #[schema(minimum = 1)]
    max_tokens: Option<i64>,
}

/// The optional `Idempotency-Key` header of mutating job and credit endpoints.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // only its parameter description is used; the middleware reads the header
pub struct IdempotencyHeader {
    /// Retrying with the same key and body returns the first answer without a second effect
    /// (kept 48 h). 1 to 255 visible characters; surrounding blanks are ignored.
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 255,
        pattern = "^[\\t -~]*[!-~][\\t -~]*$"
    )]
    idempotency_key: Option<String>,
}

/// Security scheme names used in the handlers' `security(...)` lists.
pub const ADMIN_KEY: &str = "admin_key";
pub const BEARER: &str = "bearer";

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            ADMIN_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Admin-Key",
                "An admin key: ADMIN_API_KEY, or a key made with POST /api/admin-keys/create, whose role limits what it may do.",
            ))),
        );
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A team's virtual key (`sk-...`), or the admin key for admin endpoints.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document for the merged routes: `ApiDoc` plus their paths, with the common errors added
/// (a modifier on `ApiDoc` would run before the routes' paths are merged in).
pub fn finish(mut document: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    CommonErrors.modify(&mut document);
    document
}

/// Adds the error responses every operation of a kind can give, so each handler's annotation
/// lists only its own (402, 409, 504...): 400 for bad input, 401/403 where a key is required,
/// 404 where the path names an object, 413 where there is a body, 503 when the database or
/// Redis is unreachable, 500 for a bug.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                item.get.as_mut(),
                item.put.as_mut(),
                item.post.as_mut(),
                item.delete.as_mut(),
                item.patch.as_mut(),
            ];
            for operation in operations.into_iter().flatten() {
                add_common_errors(path, operation);
                qualify_operation_id(operation);
            }
        }
    }
}

/// Handlers are named after what they do within their module (`create`, `show`), so the
/// operation id is qualified by the tag (`jobs_create`) to be unique, as OpenAPI requires and
/// client generators use for method names.
fn qualify_operation_id(operation: &mut Operation) {
    let tag = operation
        .tags
        .as_ref()
        .and_then(|tags| tags.first())
        .map(|tag| tag.replace('-', "_"));
    if let (Some(tag), Some(id)) = (tag, operation.operation_id.as_mut()) {
        *id = format!("{tag}_{id}");
    }
}

fn add_common_errors(path: &str, operation: &mut Operation) {
    // /v1 errors are in OpenAI's shape, documented on the handlers themselves.
    let openai_shape = path.starts_with("/v1/");
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let has_path_params = operation.parameters.as_ref().is_some_and(|params| {
        params
            .iter()
            .any(|p| matches!(p.parameter_in, ParameterIn::Path))
    });
    let mut errors: Vec<(&str, &str)> = Vec::new();
    if path != "/health" {
        errors.push(("400", "Invalid input"));
    }
    if secured {
        errors.push(("401", "Missing or unknown key"));
        errors.push((
            "403",
            "The key may not do this (a team key on an admin endpoint, an admin key below the endpoint's role, another team's id in the body, a suspended team)",
        ));
    }
    if has_path_params {
        errors.push((
            "404",
            "Not found (another team's objects are indistinguishable from missing ones)",
        ));
    }
    if operation.request_body.is_some() {
        errors.push(("413", "Request body larger than the limit"));
    }
    errors.push(("500", "Internal error"));
    if path != "/health" {
        errors.push((
            "503",
            "PostgreSQL or Redis unavailable; nothing was changed",
        ));
    }
    for (status, description) in errors {
        if operation.responses.responses.contains_key(status) {
            continue;
        }
        let mut response = ResponseBuilder::new().description(description);
        if !openai_shape {
            response = response.content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            );
        }
        operation
            .responses
            .responses
            .insert(status.to_owned(), response.build().into());
    }
}
