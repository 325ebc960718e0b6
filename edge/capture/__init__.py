"""Camera and video-file sources: frames in, with their timing."""
