"""A bpy-free client of the Newport AI Talking Face API.

Everything under this package runs without Blender: the HTTP client, the
storage upload, the job state machine, the job store, the worker thread, the
local sandbox server and the command line.
"""
