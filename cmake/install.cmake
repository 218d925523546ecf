# cmake/install.cmake — install rules, the CMake package (find_package(mproc)) and mproc.pc.
install(TARGETS mproc EXPORT mprocTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/mproc DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# The MPI backend, when it was built: mproc::mpi, and mprocConfig.cmake then finds MPI.
if(TARGET mproc_mpi)
  install(TARGETS mproc_mpi EXPORT mprocTargets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  set(MPROC_MPI_BUILT ON)
else()
  set(MPROC_MPI_BUILT OFF)
endif()

set(_mproc_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/mproc)
install(EXPORT mprocTargets NAMESPACE mproc:: DESTINATION ${_mproc_cmake_dir})
configure_package_config_file(cmake/mprocConfig.cmake.in
  ${PROJECT_BINARY_DIR}/mprocConfig.cmake INSTALL_DESTINATION ${_mproc_cmake_dir})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/mprocConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/mprocConfig.cmake ${PROJECT_BINARY_DIR}/mprocConfigVersion.cmake
  DESTINATION ${_mproc_cmake_dir})

# Relocatable: the prefix is found from where mproc.pc lies, whatever --prefix was used.
file(RELATIVE_PATH MPROC_PC_RELATIVE_PREFIX /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
configure_file(cmake/mproc.pc.in ${PROJECT_BINARY_DIR}/mproc.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/mproc.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
