"""The few constants every layer reads, in a module that imports nothing: the package root
(`taskscope.open`) imports the store, and the emitter in every Parsl worker must stay light.

>>> DEFAULT_STORE
'taskscope.duckdb'
"""

#: taskscope's version (also `taskscope.__version__`)
VERSION = "0.1.0"
#: the store file commands use when not given --store
DEFAULT_STORE = "taskscope.duckdb"
#: the longest log line taskscope reads (ingest keeps longer ones aside as bad lines) and so the
#: longest its emitter writes (it cuts a record to fit)
MAX_LINE_BYTES = 1 << 20
