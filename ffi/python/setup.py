"""The wheel carries libtessera, so it is tagged for the platform (py3-none-<platform>), not as pure Python."""

from setuptools import setup

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel  # type: ignore[no-redef]


class PlatformWheel(bdist_wheel):
    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self) -> tuple[str, str, str]:
        _, _, platform = super().get_tag()
        return "py3", "none", platform  # ctypes: any CPython 3, no Python ABI


setup(cmdclass={"bdist_wheel": PlatformWheel})
