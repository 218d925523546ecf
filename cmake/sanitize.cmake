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
