from fastapi import APIRouter
from pydantic import BaseModel

from contracts import ErrorCode
from gateway.body import JsonBodyRoute
from gateway.deps import CurrentPrincipal, Workspaces
from gateway.errors import ApiError

router = APIRouter(tags=["workspace"], route_class=JsonBodyRoute)


class WorkspaceInfo(BaseModel):
    workspace_id: str
    name: str


@router.get("/workspace", response_model=WorkspaceInfo, summary="The caller's workspace")
async def get_workspace(principal: CurrentPrincipal, workspaces: Workspaces) -> WorkspaceInfo:
    doc = await workspaces.get(principal.workspace_id)
    if doc is None:
        raise ApiError(ErrorCode.NOT_FOUND, "Workspace not found.")
    return WorkspaceInfo(workspace_id=doc["_id"], name=doc["name"])
