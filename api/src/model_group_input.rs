//! Checking what a request asks of model groups: a group's model list, and the group names a
//! team is granted.

use std::collections::HashSet;

use saasllm_shared::db;
use saasllm_shared::db::model_groups::NewModelEntry;
use serde::Deserialize;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;
use crate::lookup::group_not_found;

/// Most models one group may hold.
pub const MAX_MODELS_PER_GROUP: usize = 50;

// One model of a group's list, as a request gives it. (A plain comment: a doc comment would
// become the schema's description in the OpenAPI document.)
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelInput {
    /// 1 to 200 characters, not counting surrounding blanks.
    #[schema(max_length = 200, pattern = "\\S")]
    model_name: String,
    /// 0 is tried first; defaults to the position in the list. Unique within the group.
    #[serde(default, deserialize_with = "crate::extract::whole_number::optional")]
    #[schema(minimum = 0, maximum = 10_000)]
    priority: Option<i32>,
    #[schema(value_type = Option<Object>)]
    config: Option<serde_json::Value>,
}

/// Checks a model list and assigns list positions to models given without a priority.
pub fn validate_models(models: Vec<ModelInput>) -> Result<Vec<NewModelEntry>, ApiError> {
    if models.is_empty() {
        return Err(ApiError::BadRequest(
            "models must list at least one model".into(),
        ));
    }
    if models.len() > MAX_MODELS_PER_GROUP {
        return Err(ApiError::BadRequest(format!(
            "models may list at most {MAX_MODELS_PER_GROUP} models"
        )));
    }
    let mut names = HashSet::new();
    let mut priorities = HashSet::new();
    let mut entries = Vec::with_capacity(models.len());
    for (index, model) in models.into_iter().enumerate() {
        let model_name = model.model_name.trim().to_owned();
        if model_name.is_empty() || model_name.chars().count() > 200 {
            return Err(ApiError::BadRequest(
                "model_name must be between 1 and 200 characters".into(),
            ));
        }
        let priority = model.priority.unwrap_or(index as i32);
        if !(0..=10_000).contains(&priority) {
            return Err(ApiError::BadRequest(format!(
                "priority of '{model_name}' must be between 0 and 10000"
            )));
        }
        if !names.insert(model_name.clone()) {
            return Err(ApiError::BadRequest(format!(
                "model '{model_name}' is listed twice"
            )));
        }
        if !priorities.insert(priority) {
            return Err(ApiError::BadRequest(format!(
                "priority {priority} is used twice"
            )));
        }
        let config = match model.config {
            None | Some(serde_json::Value::Null) => serde_json::json!({}),
            Some(object @ serde_json::Value::Object(_)) => object,
            Some(_) => {
                return Err(ApiError::BadRequest(format!(
                    "config of '{model_name}' must be a JSON object"
                )));
            }
        };
        entries.push(NewModelEntry {
            model_name,
            priority,
            config,
        });
    }
    entries.sort_by_key(|m| m.priority);
    Ok(entries)
}

/// Deduplicates group names (first occurrence wins) and resolves them to ids in that order;
/// the first unknown name is a 404.
pub async fn resolve_group_names(
    conn: &mut PgConnection,
    names: Vec<String>,
) -> Result<(Vec<String>, Vec<Uuid>), ApiError> {
    let mut unique: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        if !unique.contains(&name) {
            unique.push(name);
        }
    }
    let found = db::model_groups::find_ids_by_names(&mut *conn, &unique).await?;
    let mut ids = Vec::with_capacity(unique.len());
    for name in &unique {
        let id = found
            .iter()
            .find(|(_, n)| n == name)
            .map(|(id, _)| *id)
            .ok_or_else(|| group_not_found(name))?;
        ids.push(id);
    }
    Ok((unique, ids))
}
