;; loop: every call spins forever (the host's time limit must stop it).
(module
  (memory (export "memory") 1)
  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (loop $forever (br $forever))
    (i32.const 1))
)
