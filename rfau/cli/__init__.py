"""The `rfau` command line: thin drivers over the library (typer + rich).

One module per command group; every command registers on ``app`` (rfau.cli.common), whose one error
handler turns an RfauError into a one-line message and the exit code of its type
(rfau.errors.ExitCode: 2 usage, 3 runtime; 1 is a check that found problems).
"""

from rfau.cli import audit, batch, experiment, model, pipeline, registry, request
from rfau.cli.common import app

app.add_typer(request.request_app, name="request")
app.add_typer(batch.batch_app, name="batch")
app.add_typer(pipeline.pipeline_app, name="pipeline")
app.add_typer(audit.audit_app, name="audit")
app.add_typer(model.model_app, name="model")

__all__ = ["app", "experiment", "registry"]

if __name__ == "__main__":
    app()
