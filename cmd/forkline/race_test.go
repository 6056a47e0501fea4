//go:build race

package main

// raceBuild: the tests run with -race, and so does the forkline binary
// they build (its parent's data races fail them too).
const raceBuild = true
