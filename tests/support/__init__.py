"""What the tests share, imported as ``tests.support.<module>`` (never from a conftest): ``cli``
runs `rfau` in-process or as a process, ``services`` starts the loopback servers (moto's S3, an
MLflow server) once per test session, ``builders`` makes the models and registries tests start
from. The fixtures that hand these out live in tests/conftest.py."""
