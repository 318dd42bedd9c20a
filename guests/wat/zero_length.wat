;; zero_length: hands the host zero-length buffers at the pointer 0xFFFFFFFF (what current Zig
;; gives a zero-length allocation): it asks for the payload there (__guest_request), logs an
;; empty line from there, makes the host call ("", "host", "echo") with an empty binding and
;; payload there, reads the (empty) host response there and answers an empty response from
;; there. Operation "read1" instead answers ONE byte from 0xFFFFFFFF (out of bounds).
;; A call with a non-empty payload makes the host write it at 0xFFFFFFFF (out of bounds).
(module
  (import "wapc" "__guest_request" (func $guest_request (param i32 i32)))
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (import "wapc" "__console_log" (func $console_log (param i32 i32)))
  (import "wapc" "__host_call"
    (func $host_call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wapc" "__host_response" (func $host_response (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "host")
  (data (i32.const 16) "echo")
  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (call $guest_request (i32.const 0x100) (i32.const 0xFFFFFFFF))
    (if (i32.eq (i32.load8_u (i32.const 0x100)) (i32.const 0x72))  ;; "r"
      (then
        (call $guest_response (i32.const 0xFFFFFFFF) (i32.const 1))
        (return (i32.const 1))))
    (call $console_log (i32.const 0xFFFFFFFF) (i32.const 0))
    (if (i32.ne
          (call $host_call
            (i32.const 0xFFFFFFFF) (i32.const 0)   ;; binding ""
            (i32.const 0) (i32.const 4)            ;; namespace "host"
            (i32.const 16) (i32.const 4)           ;; operation "echo"
            (i32.const 0xFFFFFFFF) (i32.const 0))  ;; payload ""
          (i32.const 1))
      (then (unreachable)))
    (call $host_response (i32.const 0xFFFFFFFF))
    (call $guest_response (i32.const 0xFFFFFFFF) (i32.const 0))
    (i32.const 1))
)
