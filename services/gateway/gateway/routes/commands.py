from fastapi import APIRouter

from contracts import ErrorCode
from gateway.body import JsonBodyRoute
from gateway.deps import Commands, CurrentPrincipal
from gateway.errors import ApiError
from gateway.routes.common import CommandResponse, ResourceId, command_response

router = APIRouter(tags=["commands"], route_class=JsonBodyRoute)


@router.get("/commands/{command_id}", response_model=CommandResponse, summary="A command's status and outcome")
async def get_command(command_id: ResourceId, principal: CurrentPrincipal, commands: Commands) -> CommandResponse:
    status = await commands.status(principal, command_id)
    if status is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"Command {command_id} not found.")
    return command_response(status)
