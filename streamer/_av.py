"""PyAV, always loaded after OpenCV.

PyAV's wheels bundle a libxcb of their own; when PyAV is loaded first, OpenCV's Qt
window (``--show``) livelocks at 100% CPU inside xcb on its first ``imshow``, and no
signal can stop it (PyAV-Org/PyAV#978 and #1050, opencv/opencv#29195; reproduced
here with av 18 and opencv-python 5.0 under Xvfb). Loading cv2 first avoids it, so
every module of streamer takes ``av`` from here.
"""

# isort: off
import cv2  # noqa: F401  (before av: see above)
import av

# isort: on

__all__ = ["av"]
