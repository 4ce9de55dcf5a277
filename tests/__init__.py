"""The test suite. Its folders mirror ``src/so8t_kedro/``:

* ``tests/<package>/`` tests ``src/so8t_kedro/<package>/`` (``so8t``, ``think``, ``records``,
  ``models``, ``decision``, ``training``, ``export``, ``serve``, ``reporting``,
  ``tracking``, ``datasets``);
* ``tests/pipelines/<name>/`` tests one pipeline (its nodes, slices on an in-memory
  catalog, its ``kedro run`` commands); ``tests/pipelines/`` itself the project's
  pipelines as a whole: the registry and CLI, the catalog and conf environments, kedro-viz;
* ``tests/test_<module>.py`` tests a module at the package's root (``hooks.py``,
  ``logging_filters.py``; ``test_no_hub_code.py``: what importing ``so8t_kedro`` switches
  off);
* ``tests/helpers/``: the one package of builders and tools the tests share.
"""
