# cmake/sanitize.cmake — applies MPROC_SANITIZE (address;undefined, or thread) to every target.
if(MPROC_SANITIZE)
  set(_mproc_san_list ${MPROC_SANITIZE})
  if("thread" IN_LIST _mproc_san_list AND "address" IN_LIST _mproc_san_list)
    message(FATAL_ERROR "MPROC_SANITIZE: thread and address cannot be combined")
  endif()
  list(JOIN _mproc_san_list "," _mproc_san)
  add_compile_options(-fsanitize=${_mproc_san} -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=${_mproc_san})
  message(STATUS "mproc: building with -fsanitize=${_mproc_san}")
endif()

# The environment tests and examples run in. Under ASan a crashing child must die of its
# signal, as it would in production, so that exit codes and crash reports can be checked:
# ASan keeps out of SIGSEGV and SIGABRT. allocator_may_return_null makes malloc over a
# memory limit return NULL instead of aborting (ASan's throwing operator new still aborts).
set(MPROC_TEST_ENVIRONMENT "")
if(MPROC_SANITIZE MATCHES "address")
  set(MPROC_TEST_ENVIRONMENT "ASAN_OPTIONS=handle_segv=0:handle_abort=0:handle_sigbus=0:handle_sigfpe=0:allocator_may_return_null=1:detect_leaks=1")
endif()
# Under TSan the same holds for crashing children, and:
#   halt_on_error=1        the first report fails the test (a report alone exits 66 at the end,
#                          but a child's report would be lost in a worker that then succeeds);
#   die_after_fork=0       fork() from a multi-threaded test is on purpose: the fork start
#                          method (as in Python), the shared memory tracker and the pool's
#                          zygote fork whatever threads the test or TSan itself runs;
#   second_deadlock_stack  both stacks of a lock-order report;
#   suppressions           the few false positives TSan cannot see through, each explained in
#                          cmake/tsan.supp.
if(MPROC_SANITIZE MATCHES "thread")
  set(MPROC_TEST_ENVIRONMENT "TSAN_OPTIONS=handle_segv=0:handle_abort=0:handle_sigbus=0:handle_sigfpe=0:allocator_may_return_null=1:halt_on_error=1:die_after_fork=0:second_deadlock_stack=1:suppressions=${CMAKE_CURRENT_LIST_DIR}/tsan.supp")
endif()
