// mproc/mproc.hpp — everything mproc offers on one machine (mpi.hpp is separate).
#pragma once

#include "mproc/connection.hpp"
#include "mproc/errors.hpp"
#include "mproc/process.hpp"
#include "mproc/queue.hpp"
#include "mproc/serialize.hpp"
#include "mproc/shared_memory.hpp"
#include "mproc/sync.hpp"
#include "mproc/future.hpp"
#include "mproc/pool.hpp"
#include "mproc/progress.hpp"
