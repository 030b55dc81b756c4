//! The bodies and answers of the model-group routes.

use chrono::{DateTime, Utc};
use saasllm_shared::db::model_groups::{ModelEntryRow, ModelGroupRow};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model_group_input::{MAX_MODELS_PER_GROUP, ModelInput};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateModelGroup {
    #[schema(min_length = 1, max_length = 200, pattern = "^[A-Za-z0-9_.:-]+$")]
    pub(super) group_name: String,
    pub(super) display_name: Option<String>,
    pub(super) description: Option<String>,
    /// Model names and priorities unique within the list.
    #[schema(min_items = 1, max_items = 50)]
    pub(super) models: Vec<ModelInput>,
    #[schema(value_type = Option<Object>)]
    pub(super) metadata: Option<serde_json::Value>,
}

/// A group's models: model names and priorities unique within the list.
#[derive(Deserialize)]
pub(super) struct ModelList(pub(super) Vec<ModelInput>);

// By hand: utoipa's derive takes no item bounds on a newtype, and the bare list needs them.
impl utoipa::PartialSchema for ModelList {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(utoipa::openapi::Ref::from_schema_name("ModelInput"))
            .min_items(Some(1))
            .max_items(Some(MAX_MODELS_PER_GROUP))
            .into()
    }
}

impl ToSchema for ModelList {}

/// `PUT .../models` takes the bare array, or `{"models": [...]}`.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub(super) enum ReplaceModels {
    List(ModelList),
    Object {
        #[schema(min_items = 1, max_items = 50)]
        models: Vec<ModelInput>,
    },
}

#[derive(Serialize, ToSchema)]
pub(super) struct ModelGroupResponse {
    pub(super) model_group_id: uuid::Uuid,
    pub(super) group_name: String,
    pub(super) display_name: Option<String>,
    pub(super) description: Option<String>,
    pub(super) status: String,
    pub(super) models: Vec<ModelResponse>,
    pub(super) metadata: serde_json::Value,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct ModelResponse {
    pub(super) model_name: String,
    pub(super) priority: i32,
    pub(super) config: serde_json::Value,
}

impl ModelGroupResponse {
    pub(super) fn new(group: ModelGroupRow, models: Vec<ModelEntryRow>) -> Self {
        Self {
            models: models
                .into_iter()
                .filter(|m| m.model_group_id == group.model_group_id)
                .map(|m| ModelResponse {
                    model_name: m.model_name,
                    priority: m.priority,
                    config: m.config,
                })
                .collect(),
            model_group_id: group.model_group_id,
            group_name: group.group_name,
            display_name: group.display_name,
            description: group.description,
            status: group.status.as_str().to_owned(),
            metadata: group.metadata,
            created_at: group.created_at,
            updated_at: group.updated_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(super) struct GroupModels {
    pub(super) group_name: String,
    pub(super) models: Vec<ModelResponse>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct GroupDeleted {
    pub(super) group_name: String,
    pub(super) message: String,
}
