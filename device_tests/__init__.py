"""The on-device suite: installed as ``edgeq_device_tests`` (run it with ``edgeq device-test``) and run from the
source tree with ``pytest device_tests``."""
