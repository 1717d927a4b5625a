pytest_plugins = ["parity.pytest_plugin"]
