"""Shared pytest set-up. Fixture modules live in tests/support/ and are registered here."""

import freezegun

# freezegun scans every loaded module when it starts; the ML libraries' lazy modules import
# dozens of optional pipelines when scanned (and some fail), so they are left out of the scan,
# and hypothesis keeps reading the real clock.
freezegun.configure(
    extend_ignore_list=["torch", "diffusers", "transformers", "accelerate", "safetensors",
                        "huggingface_hub", "botocore", "boto3", "hypothesis", "PIL", "scipy"]
)

pytest_plugins: list[str] = [
    # each fixture module in tests/support/ is added here, one line each
    "tests.support.s3_server",
    "tests.support.s3_storage_kit",
    "tests.support.tiny_sd",
    "tests.support.http_fixtures",
    "tests.support.fault_kit",
    "tests.support.hostile_server",
    "tests.support.dockerfile_kit",
    "tests.support.image_fetch_kit",
]
