"""Publishing a saved model folder to the Hugging Face Hub.

The recipes call `check_can_publish` before training, so that a bad repo id or a missing token fails in seconds
instead of after the run, and `push_folder_to_hub` at the end. A push never modifies the local folder; any failure
(Hub unreachable, token rejected, server error, ...) raises `HubPublishError`, whose message says what failed and
what to check, and the same push can simply be run again.

```python
>>> from hf_compact.hub import check_can_publish, push_folder_to_hub
>>> check_can_publish("my-user/compact-distilbert-sst2")  # doctest: +SKIP
>>> push_folder_to_hub("outputs/student", "my-user/compact-distilbert-sst2", private=True)  # doctest: +SKIP
'https://huggingface.co/my-user/compact-distilbert-sst2'
```

A token is read from the `token` argument, else the `HF_TOKEN` environment variable, else the login stored by
`hf auth login`. Its value never appears in a message, a log line or a pushed file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import huggingface_hub
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects
from huggingface_hub.utils import validate_repo_id as _hub_validate_repo_id
from transformers.utils import logging

from .io import write_json_atomic

try:  # the HTTP client huggingface_hub is built on: httpx2 from huggingface_hub 2, httpx before
    import httpx2 as _http
except ImportError:  # pragma: no cover
    import httpx as _http

logger = logging.get_logger(__name__)

# Training leftovers that do not belong in a published model repo (at the top of the folder or in any subfolder).
SKIPPED_PATTERNS = [
    "checkpoints/", "*/checkpoints/",
    "checkpoint-*/", "*/checkpoint-*/",
    "runs/", "*/runs/",
    "teacher_cache/", "*/teacher_cache/",
    "*.pt", "*.pth", "*.bin", "*.pkl",
    ".*", "*/.*",
]

_RERUN_HINT = "Nothing in the local folder {folder} was changed: once the problem is fixed, simply run the push again."


class HubPublishError(RuntimeError):
    """A push to the Hub failed. The local folder is intact and the push can be rerun as it is.

    Attributes:
        status_code (`int` or `None`): the HTTP status the Hub answered, when it answered at all.
    """

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


def validate_repo_id(repo_id: str) -> str:
    """Check that `repo_id` names a Hub repo as `'owner/name'` and return it unchanged.

    The name rules are huggingface_hub's: letters, digits, `-`, `_` and `.`, no `--` or `..`, not starting or ending
    with `-` or `.`, not ending with `.git`, at most 96 characters. An owner is required: a bare name would be
    created under whichever account the token belongs to, which is easy to get wrong after a long training run.

    Raises:
        ValueError: if `repo_id` is not of the form `'owner/name'` or breaks the naming rules.
    """
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or "" in repo_id.split("/"):
        raise ValueError(
            f"Invalid Hub repo id {repo_id!r}: expected 'owner/name', e.g. 'my-user/compact-distilbert-sst2' "
            "(owner is your user name or an organization)."
        )
    try:
        _hub_validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(
            f"Invalid Hub repo id {repo_id!r}: expected 'owner/name' using letters, digits, '-', '_' or '.', without "
            f"'--' or '..', not starting or ending with '-' or '.' and at most 96 characters ({err})."
        ) from None
    return repo_id


def resolve_token(token: str | None = None) -> str:
    """The Hub token to publish with: `token` if given, else the `HF_TOKEN` environment variable, else the token
    stored by `hf auth login`.

    Raises:
        ValueError: if `token` is given but empty, or if no token can be found anywhere.
    """
    if token is not None:
        if not isinstance(token, str) or not token.strip():
            raise ValueError("The Hub token passed as `token` is empty: pass a valid access token or leave it unset.")
        return token.strip()
    from_env = os.environ.get("HF_TOKEN", "").strip()
    if from_env:
        return from_env
    stored = huggingface_hub.get_token()
    if stored:
        return stored
    raise ValueError(
        "No Hugging Face token found, and publishing to the Hub needs one with write access. Log in once with "
        "`hf auth login`, or set the HF_TOKEN environment variable, or pass `token=` when calling from Python. "
        "Create a token at https://huggingface.co/settings/tokens."
    )


def check_can_publish(repo_id: str, token: str | None = None) -> None:
    """Fail fast, before training, when a later push could not work: validates `repo_id`, finds a token and checks
    that huggingface_hub's offline mode is off.

    Does not touch the network, so it cannot tell whether the token is valid or may write to `repo_id`.

    Raises:
        ValueError: on a malformed repo id, when no token is available (see `validate_repo_id`, `resolve_token`), or
            when `HF_HUB_OFFLINE` is set.
    """
    validate_repo_id(repo_id)
    resolve_token(token)
    if constants.is_offline_mode():
        raise ValueError(
            f"Cannot publish to '{repo_id}': huggingface_hub's offline mode is on (HF_HUB_OFFLINE is set). Unset "
            "HF_HUB_OFFLINE to publish, or do not ask for a push."
        )


def publishing_problem(push_to_hub: bool, hub_model_id: str | None) -> str | None:
    """What is wrong with a recipe's `--push_to_hub` / `--hub_model_id` flags, checked offline before any training
    (a repo id that is not `owner/name`, a missing token), or None."""
    if push_to_hub and not hub_model_id:
        return "--push_to_hub needs --hub_model_id owner/name."
    if not hub_model_id:
        return None
    try:
        if push_to_hub:
            check_can_publish(hub_model_id)
        else:  # named in the card's usage example even when not pushed
            validate_repo_id(hub_model_id)
    except (ValueError, RuntimeError) as error:
        return str(error)
    return None


def files_to_publish(folder: str | os.PathLike) -> list[str]:
    """The files of `folder` (relative POSIX paths, sorted) that `push_folder_to_hub` uploads: everything except
    training leftovers (`checkpoints/`, `checkpoint-*/`, `runs/`, `teacher_cache/`, `*.pt`, `*.pth`, `*.bin`,
    `*.pkl`) and dot-files."""
    root = Path(folder)
    relative = sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())
    return list(filter_repo_objects(relative, ignore_patterns=SKIPPED_PATTERNS + DEFAULT_IGNORE_PATTERNS))


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    commit_message: str = "Upload with hf_compact",
    token: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Create `repo_id` on the Hub if needed and upload the model folder to it in one commit; returns the repo URL.

    Training leftovers and dot-files are skipped (see `files_to_publish`). The local folder is only read.

    Args:
        folder: a saved model folder (`save_pretrained` output, tokenizer, model card...).
        repo_id: `'owner/name'`.
        private: create the repo as private. Ignored when the repo already exists.
        commit_message: the commit title on the Hub.
        token: a token with write access; defaults to `HF_TOKEN`, then the `hf auth login` token.
        endpoint: the Hub URL; `None` means huggingface_hub's default, which honours `HF_ENDPOINT`.

    Raises:
        ValueError: bad repo id, no token, a folder that does not exist or has nothing to publish, or a PEFT adapter
            whose base model is a local path.
        HubPublishError: the Hub could not be reached or refused the push. The local folder is untouched.
    """
    validate_repo_id(repo_id)
    resolved_token = resolve_token(token)
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"Cannot publish {str(folder)!r}: it is not a folder. Pass the folder a model was saved to.")
    files = files_to_publish(folder)
    if not files:
        raise ValueError(
            f"Cannot publish {str(folder)!r}: it has no files to upload once training leftovers and dot-files "
            f"({', '.join(SKIPPED_PATTERNS)}) are skipped."
        )
    _check_adapter_base_model(folder)
    if not commit_message or not commit_message.strip():
        raise ValueError("`commit_message` is empty: pass a short description of the upload.")

    api = HfApi(endpoint=endpoint, token=resolved_token, library_name="hf_compact")
    logger.info("Publishing %d files from %s to %s at %s", len(files), folder, repo_id, api.endpoint)
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="hf-compact-publish-") as staging:
            _stage(folder, files, Path(staging))
            commit = api.upload_folder(repo_id=repo_id, folder_path=staging, commit_message=commit_message)
    except (HfHubHTTPError, _http.HTTPError, OSError, ValueError) as err:
        raise _publish_error(err, repo_id, folder, api.endpoint, resolved_token) from None
    logger.info("Published %s (commit %s)", repo_url, getattr(commit, "oid", None))
    return str(repo_url)


def _stage(folder: Path, files: list[str], staging: Path) -> None:
    """The files to publish, linked (or copied) into `staging`; `results.json` as a copy whose local paths (the
    teacher's folder, a training file) are cut to their last part, so that no local folder name is published."""
    for name in files:
        source, target = folder / name, staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if name == "results.json":
            results = json.loads(source.read_text(encoding="utf-8"))
            write_json_atomic(target, _without_local_paths(results))
            continue
        try:
            os.link(source, target)
        except OSError:  # another file system, or links not allowed
            shutil.copy2(source, target)


def _is_local_path(value: str) -> bool:
    return os.path.isabs(value) or value.startswith(("~", "./", "../")) or ("/" in value and os.path.exists(value))


def _without_local_paths(value):
    if isinstance(value, dict):
        return {key: _without_local_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_local_paths(item) for item in value]
    if isinstance(value, str) and _is_local_path(value):
        return os.path.basename(os.path.normpath(value))
    return value


def _check_adapter_base_model(folder: Path) -> None:
    """A PEFT adapter names its base model in adapter_config.json; published, a local path there would leak and
    load nowhere else."""
    path = folder / "adapter_config.json"
    if not path.is_file():
        return
    base = json.loads(path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if isinstance(base, str) and (os.path.isabs(base) or base.startswith(("~", ".")) or os.path.exists(base)):
        raise ValueError(
            f"Cannot publish {str(folder)!r}: its adapter_config.json names the base model by the local folder "
            f"{base!r}, which nobody else can load. Push the base model to the Hub and set base_model_name_or_path to "
            "its id (recipes/finetune.py --hub_base_model owner/name), or merge the adapter into the weights."
        )


def _publish_error(err: Exception, repo_id: str, folder: Path, endpoint: str, token: str) -> HubPublishError:
    """A `HubPublishError` saying what failed and what to do, scrubbed of the token. It is raised without the
    client's exception as its cause: those carry the request objects, headers included."""
    status = None
    response = getattr(err, "response", None)
    if response is not None:
        status = getattr(response, "status_code", None)
    where = f"Publishing {folder} to '{repo_id}' at {endpoint} failed"
    detail = _short_detail(err)

    if isinstance(err, OfflineModeIsEnabled) or (status is None and constants.is_offline_mode()):
        reason = "offline mode is on (HF_HUB_OFFLINE is set); unset HF_HUB_OFFLINE to publish."
    elif isinstance(err, _http.TimeoutException):
        reason = (f"the request to the Hub timed out ({detail}). Check your network connection and that the "
                  f"endpoint {endpoint} is right (HF_ENDPOINT or `endpoint=`).")
    elif status is None and isinstance(err, (_http.TransportError, ConnectionError, OSError)):
        reason = (f"the Hub could not be reached ({detail}). Check your network connection and that the endpoint "
                  f"{endpoint} is right and up (HF_ENDPOINT or `endpoint=`).")
    elif status == 401:
        reason = ("the Hub rejected the token (HTTP 401). Check the token: log in again with `hf auth login`, or set "
                  "HF_TOKEN / pass `token=` with a valid access token.")
    elif status == 403:
        reason = (f"the token may not write to '{repo_id}' (HTTP 403). Use a token with write access to that owner "
                  "(a 'write' or fine-grained token), or publish under a namespace you own.")
    elif status == 404:
        reason = (f"the Hub answered 'not found' (HTTP 404). Check the repo id '{repo_id}' and that the endpoint "
                  f"{endpoint} is a Hugging Face Hub (HF_ENDPOINT or `endpoint=`).")
    elif status is not None and status >= 500:
        reason = (f"the Hub had a server error (HTTP {status}). This is usually temporary: wait a little, check "
                  "https://status.huggingface.co for the public Hub, and run the push again.")
    elif status is not None:
        reason = f"the Hub refused the upload (HTTP {status}): {detail}."
    else:
        reason = detail.rstrip(".") + "."
    message = f"{where}: {reason} {_RERUN_HINT.format(folder=folder)}"
    if status is not None and status < 500 and status not in (401, 403) and detail and detail not in message:
        message += f" Server said: {detail}"
    return HubPublishError(_scrub(message, token), status_code=status)


def _short_detail(err: Exception) -> str:
    """The server's own error message when there is one, else the exception's first line."""
    server_message = getattr(err, "server_message", None)
    text = server_message or str(err) or type(err).__name__
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _scrub(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text
