"""REST routes for importing samples into a dataset and exporting them."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from app.auth.deps import EngineerUser
from app.datasets import exporters, importers
from app.db import SessionDep
from app.deps import DatasetDep, SettingsDep
from app.errors import ErrorBody
from app.models import Split
from app.ids import QueryId

router = APIRouter(tags=["datasets"])


class ImportRead(BaseModel):
    imported: int
    updated: int
    unchanged: int
    duplicates: list[dict]
    ignored_columns: list[str]
    label_version: int | None
    classes: list[str]


@router.post(
    "/datasets/{dataset_id}/imports",
    status_code=201,
    response_model=ImportRead,
    responses={
        413: {"model": ErrorBody, "description": "upload over CURATE_MAX_UPLOAD_BYTES"},
        422: {"model": ErrorBody, "description": "the file was refused, nothing imported: `errors` names each bad row"},
    },
)
def import_samples(
    user: EngineerUser,
    ds: DatasetDep,
    session: SessionDep,
    settings: SettingsDep,
    # format "binary" beside OpenAPI 3.1's contentMediaType: client generators that know only
    # the former (openapi-python-client) then send a file, not a string.
    file: Annotated[UploadFile, File(description=".csv, .jsonl, .parquet, or .zip of images",
                                     json_schema_extra={"format": "binary"})],
    on_conflict: Annotated[Literal["error", "update"], Query(description="an id that already exists: refuse, or update its label and split")] = "error",
):
    """Add samples from a file, all or nothing; 422 names every bad row (up to a limit)."""
    result = importers.import_file(
        session, ds, file.file, file.filename or "", on_conflict=on_conflict, settings=settings, user=user
    )
    return ImportRead(**vars(result))


def _filename(name: str, split: Split | None, snapshot: int | None, fmt: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "dataset"
    if split is not None:
        stem += f"-{split.value}"
    if snapshot is not None:
        stem += f"-snapshot{snapshot}"
    return f"{stem}.{fmt}"


@router.get("/datasets/{dataset_id}/export", response_class=StreamingResponse,
            responses={200: {"description": "the file, in the format asked for; its `Link` header (rel=describedby) "
                                            "names the export's schema: each column's type, and the dtypes to read it with",
                             "content": {m.split(";")[0]: {"schema": {"type": "string", "format": "binary"}}
                                         for m in exporters.MEDIA_TYPES.values()}}})
def export_samples(
    request: Request,
    user: EngineerUser,
    ds: DatasetDep,
    session: SessionDep,
    format: Literal["csv", "jsonl", "parquet"] = "csv",
    split: Split | None = None,
    snapshot: QueryId = None,
) -> StreamingResponse:
    """Stream the dataset's samples, labels, curation and the followed run's scores; pinned to a snapshot if given."""
    plan = exporters.plan_export(session, ds, split=split.value if split else None, snapshot_id=snapshot,
                                 root_path=request.scope.get("root_path", ""))
    # A path, as the url column's are: the host a proxy forwards from is not known here.
    schema = f"{plan.url_root}{request.app.url_path_for('export_schema', dataset_id=ds.id)}?format={format}"
    return StreamingResponse(
        exporters.export_chunks(request.app.state.engine, plan, format),
        media_type=exporters.MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{_filename(ds.name, split, snapshot, format)}"',
                 "Link": f'<{schema}>; rel="describedby"'},
    )


class ExportColumn(BaseModel):
    name: str = Field(description="as the file spells it: in CSV, a name that starts like a formula is escaped")
    type: Literal["string", "integer", "number", "boolean", "array"]
    dtype: str = Field(description="the pandas dtype that reads the column back from CSV")
    items: Literal["string"] | None = Field(
        default=None, description="an array's item type: a multi-label dataset's label in JSONL and Parquet")
    separator: str | None = Field(
        default=None, description="what joins the classes in a string of several: a multi-label dataset's label in CSV")


class ExportSchema(BaseModel):
    format: Literal["csv", "jsonl", "parquet"]
    run_id: int | None = Field(description="the run an export started now takes its predictions and scores from")
    columns: list[ExportColumn]
    dtypes: dict[str, str] = Field(description="column name -> pandas dtype, for pandas.read_csv(dtype=...)")


@router.get("/datasets/{dataset_id}/export/schema", response_model=ExportSchema)
def export_schema(
    user: EngineerUser, ds: DatasetDep, session: SessionDep, format: Literal["csv", "jsonl", "parquet"] = "csv",
) -> ExportSchema:
    """The export's columns in order with their types, and the pandas dtypes that read a CSV
    export back as it was (a class or id named 6 stays the string "6")."""
    plan = exporters.plan_export(session, ds)
    columns = [ExportColumn(**c) for c in exporters.describe(plan, format)]
    return ExportSchema(format=format, run_id=plan.run_id, columns=columns, dtypes={c.name: c.dtype for c in columns})
