//! The student model zoo.
