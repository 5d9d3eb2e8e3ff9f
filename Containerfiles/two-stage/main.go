// Command hello prints a greeting from inside the bootc image.
package main

import "fmt"

func main() {
	fmt.Println("hello world from a bootc image")
}
