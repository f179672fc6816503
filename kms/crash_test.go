package kms_test

func runCrashChild() bool { return false }
