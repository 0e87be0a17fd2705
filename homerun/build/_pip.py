"""pip's command-line options that take a value, for reading `pip install` argument lists."""

# Options pip accepts before its command name as well as after it.
GLOBAL_OPTIONS_WITH_VALUE = frozenset(
    {
        "--timeout",
        "--retries",
        "--proxy",
        "--cert",
        "--client-cert",
        "--cache-dir",
        "--log",
        "--exists-action",
        "--python",
        "--keyring-provider",
        "--use-feature",
        "--use-deprecated",
        "--trusted-host",
        "-i",
        "--index-url",
        "--extra-index-url",
        "-f",
        "--find-links",
    }
)
# Every option of `pip install` that takes a value.
INSTALL_OPTIONS_WITH_VALUE = GLOBAL_OPTIONS_WITH_VALUE | {
    "-r",
    "--requirement",
    "-c",
    "--constraint",
    "-e",
    "--editable",
    "--platform",
    "--python-version",
    "--implementation",
    "--abi",
    "--src",
    "--upgrade-strategy",
    "-C",
    "--config-settings",
    "--global-option",
    "--no-binary",
    "--only-binary",
    "--progress-bar",
    "--root-user-action",
    "--report",
    "--group",
}
