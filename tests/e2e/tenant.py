"""The admin set-up the end-to-end scripts share: an organization, a model group and a team
allowed to use it."""


def create_team(post, org_id, org_name, group, models, team_id, credits):
    """`post(path, body)` is the script's own admin POST returning the JSON answer; `models` are
    the group's model names in priority order. Returns the created team (virtual_key, ...)."""
    post("/api/organizations/create", {"organization_id": org_id, "name": org_name})
    post("/api/model-groups/create", {"group_name": group, "models": [
        {"model_name": model, "priority": priority} for priority, model in enumerate(models)]})
    return post("/api/teams/create", {"organization_id": org_id, "team_id": team_id,
                                      "model_groups": [group], "credits_allocated": credits})
