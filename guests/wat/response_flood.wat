;; response_flood: answers with 8 MiB of its (grown) memory as the response.
(module
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "__guest_call") (param i32 i32) (result i32)
    (drop (memory.grow (i32.const 127)))
    (call $guest_response (i32.const 0) (i32.const 8388608))
    (i32.const 1)))
