"""Test suites: YAML files of cases and assertions that run through the service and gate CI
(``minerva-ai test suite``). Imports only ``minerva_ai.core`` and ``minerva_ai.client``.

``load(path)`` reads and checks a suite file (``SuiteError`` names the file, line and what
is wrong); ``Suite.feature`` is the feature's name and ``Suite.hash`` the hex SHA-256 of the
suite file's bytes followed by those of every ``vars_file`` it references, in file order
(each file once).
"""

from minerva_ai.suites.suite import Case, Suite, SuiteError, load

__all__ = ["Case", "Suite", "SuiteError", "load"]
